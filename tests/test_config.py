"""Run settings are validated once, with every problem reported together."""

from __future__ import annotations

import pytest

from medtransfer.config import MODE_DEFAULTS, parse_config
from medtransfer.errors import UserError


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_mode_defaults_are_resolved(mode):
    cfg = parse_config({"data": "synthetic:", "mode": mode})
    for name, value in MODE_DEFAULTS[mode].items():
        assert getattr(cfg, name) == value


def test_explicit_values_win_over_mode_defaults():
    cfg = parse_config({"data": "synthetic:", "mode": "finetune", "lr": 0.5, "epochs": 3, "augment": False})
    assert (cfg.lr, cfg.epochs, cfg.augment) == (0.5, 3, False)


def test_all_problems_in_one_error():
    with pytest.raises(UserError) as err:
        parse_config({"data": "x", "mode": "probe", "bootstrap": 5, "colour": "red"})
    line = err.value.line()
    assert "mode" in line and "bootstrap" in line and "colour" in line
    assert "\n" not in line


def test_fractions_must_leave_training_data():
    with pytest.raises(UserError, match="10%"):
        parse_config({"data": "x", "val_fraction": 0.5, "test_fraction": 0.45})


@pytest.mark.parametrize(("values", "message"), [
    ({"mode": "frozen", "freeze_blocks": 2, "compile": True}, "compile, freeze_blocks only apply to mode finetune"),
    ({"mode": "frozen", "accumulate": 4}, "accumulate only applies to mode finetune"),
    ({"mode": "finetune", "head": "knn"}, "head knn only applies to mode frozen"),
    ({"mode": "finetune", "head_sweep": True}, "head_sweep only applies to mode frozen"),
    ({"mode": "frozen", "head": "knn", "head_sweep": True}, "not knn"),
    ({"mode": "finetune", "freeze_blocks": 1, "lora_rank": 4}, "not both"),
])
def test_options_of_the_other_mode_are_refused(values, message):
    with pytest.raises(UserError) as err:
        parse_config({"data": "synthetic:", **values})
    assert message in err.value.line()


def _other_than_default(name: str) -> object:
    """A valid value of a Fine-tuning option other than its declared default."""
    from medtransfer.config import TrainConfig

    default = TrainConfig.model_fields[name].default
    return (not default) if isinstance(default, bool) else (default or 0) + 1


def test_every_fine_tuning_option_given_is_refused_in_frozen_mode():
    from medtransfer.config import fields_in

    names = fields_in("Fine-tuning")
    assert len(names) >= 5
    for name in names:
        with pytest.raises(UserError, match=f"mode frozen: {name} only applies to mode finetune"):
            parse_config({"data": "synthetic:", name: _other_than_default(name)})
        # Given at its default it is not given at all; in finetune mode it is welcome.
        default = parse_config({"data": "synthetic:"}).model_dump()[name]
        assert getattr(parse_config({"data": "synthetic:", name: default}), name) == default
        parse_config({"data": "synthetic:", "mode": "finetune", name: _other_than_default(name)})


def test_options_of_their_own_mode_are_accepted():
    assert parse_config({"data": "synthetic:", "mode": "finetune", "freeze_blocks": 0, "accumulate": 2}).freeze_blocks == 0
    assert parse_config({"data": "synthetic:", "head": "knn"}).head == "knn"


@pytest.mark.parametrize("values", [{"seed": -1}, {"seed": 2**40}, {"split_seed": 2**32}, {"lr": 1e38},
                                    {"split_dirs": "train=A,train=B"}, {"split_dirs": "train"},
                                    {"split_dirs": "holdout=A"}, {"dedup": "maybe"}])
def test_out_of_range_or_malformed_settings_are_refused(values):
    with pytest.raises(UserError):
        parse_config({"data": "synthetic:", **values})


def test_split_dirs_parse_from_a_command_line_and_pass_from_yaml():
    assert parse_config({"data": "x", "split_dirs": "Train=Training, test=Testing"}).split_dirs == {
        "train": "Training", "test": "Testing"}
    assert parse_config({"data": "x", "split_dirs": {"val": "dev"}}).split_dirs == {"val": "dev"}
    assert parse_config({"data": "x", "seed": 2**32 - 1}).seed == 2**32 - 1


# ---- one declaration per setting: help, panel, choices; list options from a command line; volume rules ---------


def test_every_setting_declares_help_and_a_known_panel():
    from medtransfer.config import PANELS, TrainConfig, field_extra

    for name, field in TrainConfig.model_fields.items():
        assert field.description and field_extra(name)["panel"] in PANELS, name


def test_plane_choices_are_the_planes_with_an_axis():
    from typing import get_args

    from medtransfer.data.volume_options import PLANE_AXIS, Plane

    assert set(get_args(Plane)) == set(PLANE_AXIS)


@pytest.mark.parametrize(("text", "expected"), [("t1,t2,flair", ["t1", "t2", "flair"]), (" t1 , t2,", ["t1", "t2"]),
                                                ("", None)])
def test_lists_parse_from_a_command_line_and_pass_from_yaml(text, expected):
    cfg = parse_config({"data": "x", "modalities": text or None, "class_order": text, "modality_mode": "separate"})
    assert cfg.modalities == expected and cfg.class_order == expected
    assert parse_config({"data": "x", "class_order": ["b", "a"]}).class_order == ["b", "a"]


@pytest.mark.parametrize(("values", "mentions"), [
    ({"slices": "middle:4"}, ("slices 'middle:4'", "center:16")),
    ({"pattern": "{case}.nii"}, ("pattern '{case}.nii'", "{modality}")),
    ({"modalities": "t1,T1,t2"}, ("repeat a name",)),
    ({"modalities": "t1,seg,t2"}, ("'seg'", "segmentation")),
    ({"modalities": "t1,t2"}, ("1 (grey) or 3 (RGB)", "list 1 or 3 modalities")),
    ({"plane": "oblique", "normalize": "minmax"}, ("plane 'oblique'", "normalize 'minmax'", "axial")),
])
def test_volume_settings_are_checked_once_at_the_boundary(values, mentions):
    with pytest.raises(UserError) as err:
        parse_config({"data": "x", **values})
    line = err.value.line()
    assert all(m in line for m in mentions), line
    assert "Value error" not in line


def test_separate_mode_takes_any_number_of_modalities_and_image_sources_none():
    assert parse_config({"data": "x", "modalities": "t1,t2", "modality_mode": "separate"}).modalities == ["t1", "t2"]
    assert parse_config({"data": "x", "slices": "tumor:2"}).modalities is None


def test_volume_settings_helper_gives_the_config_defaults():
    from helpers import volume_settings

    from medtransfer.config import TrainConfig

    opts = volume_settings(modalities=("t1",), plane="coronal")
    assert (opts.modalities, opts.plane, opts.axis, opts.fused) == (("t1",), "coronal", 1, True)
    for name in ("slices", "normalize", "pattern", "labels_csv", "skip_incomplete", "modality_mode"):
        assert getattr(opts, name) == TrainConfig.model_fields[name].default, name
    with pytest.raises(UserError, match="slices"):
        volume_settings(slices="center:0")


def test_the_volume_rules_do_not_import_the_config():
    """config imports the data layer's rules; the reverse, even behind a local import, would be a hidden cycle."""
    import subprocess
    import sys

    code = ("import sys, medtransfer.data.volume_options as v, medtransfer.data.npz, medtransfer.data.dedup_action; "
            "print('medtransfer.config' in sys.modules, hasattr(v.VolumeOptions, 'default'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"], done.stdout + done.stderr


def test_study_groups_follow_the_declarations():
    from typing import get_args

    from medtransfer.config import TrainConfig, fields_in
    from medtransfer.study.schema import DATA_FIELDS, GRID_FIELDS, HEADS, SETTING_FIELDS

    groups = [set(DATA_FIELDS), set(GRID_FIELDS), set(SETTING_FIELDS)]
    assert sum(map(len, groups)) == len(TrainConfig.model_fields) == len(set.union(*groups))
    assert set(fields_in("CSV", "Volumes")) <= set(DATA_FIELDS)
    # A study may set split_dirs for all datasets; the held-out shares are each dataset's own.
    assert {"split_dirs", "dedup"} <= set(SETTING_FIELDS) & set(fields_in("Data"))
    assert {"test_fraction", "val_fraction", "data"} <= set(DATA_FIELDS)
    assert HEADS == get_args(TrainConfig.model_fields["head"].annotation)


def test_choices_shared_with_the_data_layer_and_the_metrics_record_are_declared_once():
    from medtransfer.config import TrainConfig
    from medtransfer.data.dedup_action import Action
    from medtransfer.data.duplicate_record import describe
    from medtransfer.rundir.metrics import PatientMetrics

    assert TrainConfig.model_fields["dedup"].annotation is Action
    assert describe.__annotations__["action"] == "Action"  # the data layer's record takes the same choices
    assert (PatientMetrics.model_fields["aggregation"].annotation
            is TrainConfig.model_fields["patient_agg"].annotation)


# ---- every problem in one line: where, what, and the fix once ----------------------------------------------


def _line(**values: object) -> str:
    with pytest.raises(UserError) as err:
        parse_config({"data": "x", **values}, "medtransfer train")
    return err.value.line()


@pytest.mark.parametrize(("values", "subject", "fix"), [
    ({"slices": "center:0"}, "slices 'center:0'", "write e.g. center:16"),
    ({"pattern": "{case}.nii"}, "pattern '{case}.nii'", "write e.g. {case}_{modality}.nii.gz"),
    ({"modalities": "t1,t2"}, "modalities t1,t2", "list 1 or 3 modalities"),
    ({"folds": 1}, "fold 0 of folds 1", "use folds 0"),
    ({"mode": "frozen", "compile": True}, "mode frozen", "use mode finetune"),
    ({"val_fraction": 0.5, "test_fraction": 0.45}, "val_fraction 0.5 + test_fraction 0.45", "lower one of them"),
])
def test_a_problem_with_its_own_fix_gives_that_fix_once(values, subject, fix):
    line = _line(**values)
    assert line.startswith(f"medtransfer train: {subject}: "), line
    assert line.count(" — ") == 1 and line.partition(" — ")[2].startswith(fix), line
    assert "fix these settings" not in line and "config:" not in line and "Value error" not in line


def test_problems_without_a_fix_of_their_own_end_with_the_general_fix():
    line = _line(mode="probe", split_dirs={"holdout": "A"}, bootstrap=5)
    assert "mode 'probe': Input should be 'frozen' or 'finetune'" in line
    assert "split_dirs key 'holdout': Input should be 'train', 'val' or 'test'" in line and "[key]" not in line
    assert "bootstrap: Input should be greater than or equal to 100" in line
    assert line.count(" — ") == 1 and line.endswith("— fix these settings (see `medtransfer train --help`)")


def test_several_problems_keep_each_ones_own_fix_beside_it():
    line = _line(slices="x", pattern="y", mode="probe")
    assert "slices 'x': is not center:K" in line and "(write e.g. center:16, all-nonzero or tumor:8)" in line
    assert "(write e.g. {case}_{modality}.nii.gz)" in line and "mode 'probe'" in line
    assert line.count(" — ") == 1 and line.endswith("— fix these settings (see `medtransfer train --help`)")
    rules = _line(mode="frozen", compile=True, folds=1, modalities="t1,T1,t2")  # every rule across settings at once
    assert all(m in rules for m in ("mode frozen: compile", "fold 0 of folds 1", "repeat a name")), rules
