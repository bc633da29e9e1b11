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
