"""Run ids: a hash of the settings that depart from the defaults, so they survive options added later."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import create_model

from medtransfer.config import MODE_DEFAULTS, TrainConfig
from medtransfer.study.grid import NOT_IN_ID, expand, run_id
from medtransfer.study.schema import load_study

STUDY = """
datasets: {a: {data: "synthetic:n=40"}, b: {data: "synthetic:n=60,classes=3", val_fraction: 0.3}}
backbones: [resnet18, {name: dinov2_vits14, image_size: 56}]
modes: {frozen: {heads: [linear, mlp, knn]}, finetune: {epochs: 2, accumulate: 2}}
seeds: [0, 1]
train_fractions: [0.5, 1.0]
"""

# The resolved frozen defaults when RUN_ID_SCHEMA became 2 (`weights` was then spelled `imagenet`, which run_id
# still reads as `pretrained`: test_imagenet_and_pretrained_weights_share_a_run_id). Ids hash only departures from the defaults, so a changed
# default would silently give runs that relied on it their old id: bump RUN_ID_SCHEMA and update this instead.
DEFAULTS_AT_SCHEMA_2 = {
    "modality_mode": "fused", "slices": "center:16", "plane": "axial", "normalize": "percentile", "labels_csv": None,
    "skip_incomplete": False, "pattern": "{case}_{modality}.nii.gz", "task": None, "path_col": None,
    "label_col": None, "group_col": None, "split_col": None, "image_root": None, "skip_missing": False,
    "modalities": None, "test_fraction": 0.2, "val_fraction": 0.2, "train_fraction": 1.0, "folds": 0, "fold": 0,
    "split_seed": 0, "allow_missing_classes": False, "class_order": None, "backbone": "resnet50",
    "weights": "pretrained", "image_size": None, "pooling": "auto", "mode": "frozen", "head": "linear",
    "head_sweep": False, "optimizer": "adam", "lr": 0.001, "weight_decay": 0.0, "batch_size": 256, "epochs": 100,
    "schedule": "cosine", "patience": None, "select": "val_auroc", "class_weights": False, "augment": False,
    "accumulate": 1, "compile": False, "freeze_blocks": None, "lora_rank": None, "grad_checkpointing": False,
    "seed": 0, "bootstrap": 2000, "patient_agg": "mean",
}
FINETUNE_AT_SCHEMA_2 = {"lr": 0.0001, "batch_size": 32, "epochs": 20, "augment": True}


@pytest.fixture
def specs(tmp_path: Path) -> list:
    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    return expand(load_study(path), tmp_path / "out")


def extended(**fields: tuple) -> type[TrainConfig]:
    """TrainConfig as a later version might declare it: the same settings plus new ones with defaults."""
    return create_model("LaterTrainConfig", __base__=TrainConfig, **fields)


def test_a_new_option_with_a_default_keeps_every_id(specs):
    assert len(specs) == 2 * 2 * 4 * 2 * 2 and len({s.run_id for s in specs}) == len(specs)
    later = extended(new_option=(int, 3), new_list=(list[str] | None, None), new_flag=(bool, False))
    for spec in specs:
        again = later(**spec.config.model_dump())
        assert run_id(again) == spec.run_id, spec.label
        assert run_id(later(**spec.config.model_dump(), new_option=4)) != spec.run_id  # used: a different run


def test_a_new_mode_dependent_default_keeps_every_id(specs, monkeypatch):
    # A later version resolving a new per-mode default in the validator (as lr and epochs are) keeps ids too.
    later = extended(warmup=(int | None, None))
    monkeypatch.setitem(MODE_DEFAULTS, "frozen", {**MODE_DEFAULTS["frozen"], "warmup": 0})
    monkeypatch.setitem(MODE_DEFAULTS, "finetune", {**MODE_DEFAULTS["finetune"], "warmup": 2})
    for spec in specs:
        assert run_id(later(**spec.config.model_dump())) == spec.run_id, spec.label


def test_a_value_set_to_its_default_hashes_as_unset():
    base = {"data": "synthetic:n=40", "backbone": "resnet18"}
    assert run_id(TrainConfig(**base)) == run_id(TrainConfig(**base, lr=1e-3, epochs=100, bootstrap=2000,
                                                              split_seed=0, class_order=None))
    finetune = TrainConfig(**base, mode="finetune")
    assert run_id(finetune) == run_id(TrainConfig(**base, mode="finetune", lr=1e-4, batch_size=32, augment=True))
    # The same lr is a default in one mode and a choice in the other.
    assert run_id(TrainConfig(**base, lr=1e-4)) != run_id(TrainConfig(**base))
    assert run_id(TrainConfig(**base, mode="finetune", lr=1e-3)) != run_id(finetune)


def test_every_setting_that_changes_results_changes_the_id():
    cfg = TrainConfig(data="synthetic:n=40", backbone="resnet18")
    changes = {"data": "synthetic:n=41", "mode": "finetune", "lr": 0.5, "seed": 1, "split_seed": 3,
               "class_order": ["a", "b"], "allow_missing_classes": True, "patient_agg": "max", "backbone": "vgg16"}
    ids = {run_id(cfg.model_copy(update={name: value})) for name, value in changes.items()}
    assert run_id(cfg) not in ids and len(ids) == len(changes)
    moved = {"out": "/x", "cache_dir": "/c", "workers": 4, "device": "cpu", "image_cache": False}
    assert set(moved) == set(NOT_IN_ID)
    assert run_id(cfg.model_copy(update=moved)) == run_id(cfg)


def test_ids_are_pinned():
    # These literals change only with RUN_ID_SCHEMA: otherwise every finished study would run again on resume.
    assert run_id(TrainConfig(data="synthetic:n=40", backbone="resnet18")) == "0712ca7dbd14"
    assert run_id(TrainConfig(data="synthetic:n=40", backbone="resnet18", mode="finetune")) == "24fd5303c068"


def test_defaults_are_those_the_ids_were_pinned_with():
    frozen = TrainConfig(data="x").model_dump(mode="json")
    finetune = TrainConfig(data="x", mode="finetune").model_dump(mode="json")
    # New settings may come (they are not compared); an old one's default may not change without a schema bump.
    assert {k: frozen[k] for k in DEFAULTS_AT_SCHEMA_2.keys() & frozen.keys()} == \
        {k: v for k, v in DEFAULTS_AT_SCHEMA_2.items() if k in frozen}
    expected = {**DEFAULTS_AT_SCHEMA_2, "mode": "finetune", **FINETUNE_AT_SCHEMA_2}
    assert {k: finetune[k] for k in expected.keys() & finetune.keys()} == {k: v for k, v in expected.items()
                                                                          if k in finetune}


def test_a_bad_setting_in_a_study_reads_as_in_train_naming_the_run_and_its_fix_once(tmp_path):
    from medtransfer.errors import UserError

    path = tmp_path / "s.yaml"
    path.write_text(STUDY.replace('{data: "synthetic:n=40"}', '{data: "synthetic:n=40", slices: "center:0"}'))
    with pytest.raises(UserError) as err:
        expand(load_study(path), tmp_path / "out")
    line = err.value.line()
    # One problem per (dataset, backbone, mode), each said once, whatever the heads, fractions and seeds.
    assert line.count("slices 'center:0': is not center:K") == 4 and "a/resnet18/frozen: slices" in line, line
    assert "(write e.g. center:16, all-nonzero or tumor:8)" in line and "b/" not in line
    assert line.count(" — ") == 1 and line.endswith("— fix these settings in the study file")
    # The only problem: its own fix ends the line.
    path.write_text('datasets: {a: {data: "synthetic:n=40", slices: "center:0"}}\nbackbones: [resnet18]\n'
                    "modes: {frozen: {}}\n")
    with pytest.raises(UserError) as err:
        expand(load_study(path), tmp_path / "out")
    from medtransfer.data.volume_options import parse_slices

    with pytest.raises(UserError) as own:  # the data layer's own line, subject and fix, passes through whole
        parse_slices("center:0")
    assert err.value.line() == f"study: a/resnet18/frozen: {own.value.line()}"


def test_imagenet_and_pretrained_weights_share_a_run_id():
    """`imagenet` was the default's name before `pretrained`: a finished study that spelled it keeps its run ids."""
    from medtransfer.config import TrainConfig
    from medtransfer.study.grid import run_id

    base = {"data": "synthetic:", "backbone": "resnet18"}
    assert run_id(TrainConfig(**base, weights="imagenet")) == run_id(TrainConfig(**base)) == \
        run_id(TrainConfig(**base, weights="pretrained"))
    assert run_id(TrainConfig(**base, weights="none")) != run_id(TrainConfig(**base))
