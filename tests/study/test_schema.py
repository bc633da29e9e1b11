"""Study files: validated once, every problem listed; every shipped preset is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtransfer.errors import UserError
from medtransfer.study.grid import expand, run_id
from medtransfer.study.schema import load_study

STUDIES = sorted((Path(__file__).resolve().parents[2] / "studies").glob("*.yaml"))
MINIMAL = """
datasets: {a: {data: "synthetic:n=40"}}
backbones: [resnet18]
modes: {frozen: {}}
"""


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_shipped_study_is_valid(path, tmp_path):
    specs = expand(load_study(path), tmp_path)
    assert specs and len({s.run_id for s in specs}) == len(specs)


def test_huang2024_preset_follows_the_paper():
    study = load_study(Path(__file__).resolve().parents[2] / "studies" / "huang2024.yaml")
    names = [b.name for b in study.backbones]
    assert names[:6] == ["vgg16", "resnet50", "densenet121", "dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14"]
    assert "dinov2_vitg14" in names and study.modes["frozen"].heads == ["mlp"]
    t = study.train
    assert (t.optimizer, t.lr, t.batch_size, t.epochs, t.select, t.image_size, t.weights) == (
        "adam", 1e-4, 32, 100, "val_accuracy", 224, "imagenet")
    assert all(d.val_fraction == 0.2 for d in study.datasets.values())


def test_every_problem_in_one_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("""
datasets: {a: {data: "synthetic:", colour: red}}
backbones: [resnet18]
modes: {probe: {}}
seeds: "zero"
learning_rate: 3
""")
    with pytest.raises(UserError) as err:
        load_study(path)
    line = err.value.line()
    for word in ("colour", "modes", "seeds", "learning_rate"):
        assert word in line
    assert "\n" not in line


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_study(bad)
    with pytest.raises(UserError, match="cannot read"):
        load_study(tmp_path / "none.yaml")


def test_overrides_layer_shared_dataset_mode_backbone(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("""
datasets: {a: {data: "synthetic:n=40", epochs: 7, lr: 0.1}}
backbones: [{name: resnet18, lr: 0.3}, dinov2_vits14]
modes: {frozen: {heads: [linear, mlp], lr: 0.2}, finetune: {}}
train: {epochs: 3, lr: 0.01, batch_size: 8}
seeds: [0, 1]
train_fractions: [0.5, 1.0]
""")
    specs = expand(load_study(path), tmp_path / "out")
    assert len(specs) == 2 * (2 + 1) * 2 * 2
    by = {(s.config.backbone, s.config.mode, s.config.head, s.config.seed, s.config.train_fraction): s.config
          for s in specs}
    assert by[("resnet18", "frozen", "mlp", 0, 1.0)].lr == 0.3  # backbone beats mode beats dataset beats shared
    assert by[("dinov2_vits14", "frozen", "linear", 0, 1.0)].lr == 0.2
    assert by[("dinov2_vits14", "finetune", "linear", 1, 0.5)].lr == 0.1
    assert all(c.epochs == 7 and c.batch_size == 8 for c in by.values())


def test_run_id_is_stable_and_ignores_where_a_run_computes(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(MINIMAL)
    a = expand(load_study(path), tmp_path / "x")[0]
    b = expand(load_study(path), tmp_path / "y")[0]
    assert a.run_id == b.run_id
    moved = a.config.model_copy(update={"workers": 3, "device": "cpu", "cache_dir": "/elsewhere"})
    assert run_id(moved) == a.run_id
    assert run_id(a.config.model_copy(update={"lr": 0.5})) != a.run_id


def test_invalid_combination_is_reported(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(MINIMAL.replace("modes: {frozen: {}}", "modes: {frozen: {lr: -1}}"))
    with pytest.raises(UserError, match="lr"):
        expand(load_study(path), tmp_path)


def test_separate_modalities_become_one_dataset_each(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("""
datasets:
  glioma: {data: /v, labels_csv: /l.csv, modalities: [t1post, t2, flair], modality_mode: separate}
backbones: [resnet18]
modes: {frozen: {}}
""")
    specs = expand(load_study(path), tmp_path)
    assert sorted(s.config.task for s in specs) == ["glioma-flair", "glioma-t1post", "glioma-t2"]
    assert all(len(s.config.modalities) == 1 and s.config.modality_mode == "fused" for s in specs)


def test_a_duplicate_dataset_key_is_refused_with_its_lines(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("""datasets:
  a: {data: "synthetic:n=40"}
  b: {data: "synthetic:n=50"}
  a: {data: "synthetic:n=60"}
backbones: [resnet18]
modes: {frozen: {}}
""")
    with pytest.raises(UserError) as err:
        load_study(path)
    line = err.value.line()
    assert "duplicate key 'a' on lines 2 and 4" in line and "\n" not in line


@pytest.mark.parametrize("text", [
    MINIMAL + "seeds: [0]\nseeds: [1]\n",  # top level
    MINIMAL.replace('{data: "synthetic:n=40"}', '{data: "synthetic:n=40", data: "synthetic:n=80"}'),  # inside a dataset
    MINIMAL.replace("modes: {frozen: {}}", "modes:\n  frozen: {epochs: 2}\n  frozen: {epochs: 3}"),
])
def test_a_duplicate_key_at_any_level_is_refused(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="duplicate key"):
        load_study(path)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("""datasets:
  a: &common {data: "synthetic:n=40", epochs: 3}
  b: {<<: *common, epochs: 5}
backbones: [resnet18]
modes: {frozen: {}}
""")
    study = load_study(path)
    assert study.datasets["a"].epochs == 3 and study.datasets["b"].epochs == 5


def test_repeats_that_would_be_the_same_run_twice_are_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("""datasets:
  glioma: {data: /v, labels_csv: /l.csv, modalities: [t1post, t2], modality_mode: separate}
  glioma-t2: {data: "synthetic:n=40"}
backbones: [resnet18, {name: resnet18}, {name: resnet18, weights: none}]
modes: {frozen: {heads: [linear, linear]}}
""")
    with pytest.raises(UserError) as err:
        load_study(path)
    line = err.value.line()
    assert "task 'glioma-t2' comes from more than one dataset" in line
    assert "'resnet18' is listed twice" in line  # the one with other weights is a distinct backbone
    assert "'linear' is listed twice" in line
    path.write_text(MINIMAL + "seeds: [0, 1, 0]\n")
    with pytest.raises(UserError, match=r"seeds.*\[0\] more than once"):
        load_study(path)


def test_modes_are_the_configs_modes_and_refused_choices_are_named(tmp_path):
    from typing import get_args

    from medtransfer.config import TrainConfig
    from medtransfer.study.schema import MODES

    assert MODES == get_args(TrainConfig.model_fields["mode"].annotation)
    path = tmp_path / "s.yaml"

    def refused(modes: str) -> str:
        path.write_text(MINIMAL.replace("modes: {frozen: {}}", f"modes: {modes}"))
        with pytest.raises(UserError) as err:
            load_study(path)
        line = err.value.line()
        assert "Value error" not in line and line.count(" — ") == 1 and line.endswith("(see studies/demo.yaml)")
        return line

    assert f"modes: modes are {' and/or '.join(MODES)}, got ['frozen', 'probe']" in refused("{probe: {}, frozen: {}}")
    # The refused choice is named, as `train` names it.
    assert "modes.frozen.optimizer 'lion': Input should be" in refused("{frozen: {optimizer: lion}}")


def test_foundation2026_preset_puts_each_model_on_the_tasks_it_suits():
    from medtransfer.study.preflight import model_problems

    study = load_study(Path(__file__).resolve().parents[2] / "studies" / "foundation2026.yaml")
    runs = expand(study, Path("out"))
    tasks_of: dict[str, set[str]] = {}
    for spec in runs:
        tasks_of.setdefault(spec.config.backbone, set()).add(spec.config.task)
    every = set(study.datasets)
    for name in ("vgg16", "resnet50", "densenet121", "dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14",
                 "dinov3_vits16", "dinov3_vitb16", "dinov3_vitl16", "dinov3_convnext_tiny", "biomedclip", "medsiglip"):
        assert tasks_of[name] == every, name
    assert (tasks_of["rad_dino"], tasks_of["retfound"]) == ({"chest_xray"}, {"amd"})
    assert tasks_of["uni"] == tasks_of["virchow2"] == {"pathology"}
    assert {s.config.weights for s in runs} == {"pretrained"} and {s.config.image_size for s in runs} == {224}
    # Every backbone passes the run's own model checks at the preset's size, on the meta device (no weights).
    distinct = {(s.config.backbone, s.config.mode): s.config for s in runs}
    assert [p for cfg in distinct.values() for p in model_problems(cfg)] == []


def test_a_backbone_limited_to_an_unknown_or_empty_dataset_list_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("""
datasets: {a: {data: "synthetic:"}, b: {data: "synthetic:"}}
backbones: [{name: resnet18, datasets: [a, c]}, {name: resnet34, datasets: []}]
modes: {frozen: {}}
""")
    with pytest.raises(UserError) as err:
        load_study(path)
    line = err.value.line()
    assert "'resnet18' names datasets ['c']" in line and "it has a, b" in line
    assert "'resnet34' has an empty datasets list" in line


def test_a_backbone_limited_to_one_dataset_runs_only_there(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("""
datasets: {a: {data: "synthetic:"}, b: {data: "synthetic:"}}
backbones: [resnet18, {name: resnet34, datasets: [b]}]
modes: {frozen: {}}
""")
    runs = expand(load_study(path), tmp_path)
    assert sorted((s.config.task, s.config.backbone) for s in runs) == [
        ("a", "resnet18"), ("b", "resnet18"), ("b", "resnet34")]
