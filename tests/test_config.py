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
    ({"mode": "frozen", "accumulate": 4}, "accumulate only apply to mode finetune"),
    ({"mode": "finetune", "head": "knn"}, "only apply to mode frozen"),
    ({"mode": "finetune", "head_sweep": True}, "only apply to mode frozen"),
    ({"mode": "frozen", "head": "knn", "head_sweep": True}, "not knn"),
    ({"mode": "finetune", "freeze_blocks": 1, "lora_rank": 4}, "not both"),
])
def test_options_of_the_other_mode_are_refused(values, message):
    with pytest.raises(UserError) as err:
        parse_config({"data": "synthetic:", **values})
    assert message in err.value.line()


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


def test_volume_options_default_is_the_config_default():
    from medtransfer.config import TrainConfig
    from medtransfer.data.volume_options import VolumeOptions

    opts = VolumeOptions.default(modalities=("t1",), plane="coronal")
    assert (opts.modalities, opts.plane, opts.axis, opts.fused) == (("t1",), "coronal", 1, True)
    for name in ("slices", "normalize", "pattern", "labels_csv", "skip_incomplete", "modality_mode"):
        assert getattr(opts, name) == TrainConfig.model_fields[name].default, name
    with pytest.raises(UserError, match="slices"):
        VolumeOptions.default(slices="center:0")


def test_study_groups_follow_the_declarations():
    from typing import get_args

    from medtransfer.config import TrainConfig, fields_in
    from medtransfer.study.schema import DATA_FIELDS, GRID_FIELDS, HEADS, SETTING_FIELDS

    groups = [set(DATA_FIELDS), set(GRID_FIELDS), set(SETTING_FIELDS)]
    assert sum(map(len, groups)) == len(TrainConfig.model_fields) == len(set.union(*groups))
    assert set(fields_in("CSV", "Volumes")) <= set(DATA_FIELDS)
    # A study may set split_dirs for all datasets; the held-out shares are each dataset's own.
    assert "split_dirs" in SETTING_FIELDS and {"test_fraction", "val_fraction", "data"} <= set(DATA_FIELDS)
    assert HEADS == get_args(TrainConfig.model_fields["head"].annotation)
