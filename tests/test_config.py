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
