"""The probe registry: one entry per head of TrainConfig (plus the sweep), each built from the run's settings."""

from __future__ import annotations

from typing import get_args

import pytest

from medtransfer.config import TrainConfig
from medtransfer.engine.heads import ProbeHead
from medtransfer.engine.knn import KNNProbe
from medtransfer.engine.probes import PROBES, make_probe, probe_entry
from medtransfer.engine.sweep import HeadSweep
from medtransfer.errors import UserError
from medtransfer.rundir.files import WEIGHTS_KINDS


def config(**given: object) -> TrainConfig:
    return TrainConfig(data="synthetic:", **given)


def test_registry_names_are_the_config_heads_and_the_sweep():
    heads = set(get_args(TrainConfig.model_fields["head"].annotation))
    assert set(PROBES.names()) - {"sweep"} == heads
    assert "sweep" in PROBES


@pytest.mark.parametrize(("given", "cls", "kind"), [
    ({"head": "linear"}, ProbeHead, "head"),
    ({"head": "mlp"}, ProbeHead, "head"),
    ({"head": "knn"}, KNNProbe, "knn"),
    ({"head": "mlp", "head_sweep": True}, HeadSweep, "head"),
])
def test_make_probe_builds_the_configured_class(given, cls, kind):
    cfg = config(**given)
    probe = make_probe(cfg)
    assert type(probe) is cls
    assert probe_entry(cfg).weights_kind == kind and kind in WEIGHTS_KINDS


def test_probe_takes_the_run_settings():
    head = make_probe(config(head="mlp", lr=0.02, weight_decay=0.5, epochs=7))
    assert (head.head, head.lr, head.weight_decay, head.epochs) == ("mlp", 0.02, 0.5, 7)
    sweep = make_probe(config(head="linear", head_sweep=True, epochs=3))
    assert (sweep.head, sweep.epochs) == ("linear", 3) and len(sweep.grid()) > 1
    assert make_probe(config(head="knn", select="val_loss")).select == "val_loss"


def test_unknown_head_names_the_nearest():
    cfg = config().model_copy(update={"head": "mlpp"})  # past validation, as a drifted caller would be
    with pytest.raises(UserError, match="did you mean 'mlp'"):
        make_probe(cfg)
