"""Probes on cached features: the contract every one follows, and the registry that builds one from a run's settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch import nn

from medtransfer.config import TrainConfig, from_config
from medtransfer.engine.heads import ProbeHead
from medtransfer.engine.knn import KNNProbe
from medtransfer.engine.sweep import HeadSweep
from medtransfer.registry import Registry
from medtransfer.rundir.files import WeightsKind


class FeatureProbe(Protocol):
    """The sklearn-style contract of a probe on fixed features: fit on train, choose on val, predict."""

    history_: list[dict]  # one row per epoch (heads) or per k tried (kNN)
    best_epoch_: int  # the epoch whose weights are kept (kNN: the chosen k)
    module_: nn.Module  # what predicts, with a state_dict to save

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
            n_classes: int) -> FeatureProbe:
        """Train on (x, y), choosing on (x_val, y_val); returns self."""
        ...

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, K)."""
        ...

    def selection(self) -> dict | None:
        """How the probe chose among candidates (a sweep's heads, kNN's k) for metrics.json; None: nothing chosen."""
        ...


def _probe_head(cfg: TrainConfig) -> FeatureProbe:
    return from_config(ProbeHead, cfg)


def _head_sweep(cfg: TrainConfig) -> FeatureProbe:
    # The sweep replaces lr and weight decay by its own grid: only the shared training settings come from the run.
    return from_config(HeadSweep, cfg)


def _knn(cfg: TrainConfig) -> FeatureProbe:
    return from_config(KNNProbe, cfg)


@dataclass(frozen=True)
class ProbeEntry:
    """A registered probe: how to build it from the run's settings, and which run-dir weights file its module fills."""

    build: Callable[[TrainConfig], FeatureProbe]
    weights_kind: WeightsKind


def _probes() -> Registry[ProbeEntry]:
    """Every probe by name."""
    probes: Registry[ProbeEntry] = Registry("head")
    probes.register("linear", ProbeEntry(_probe_head, "head"))
    probes.register("mlp", ProbeEntry(_probe_head, "head"))
    probes.register("knn", ProbeEntry(_knn, "knn"))  # its "weights" are the bank of train features and labels
    probes.register("sweep", ProbeEntry(_head_sweep, "head"))  # `head_sweep`: a grid of linear or mlp heads
    return probes


PROBES = _probes()


def probe_name(cfg: TrainConfig) -> str:
    """The registry name of a frozen run's probe: its head, or `sweep` with head_sweep."""
    return "sweep" if cfg.head_sweep else cfg.head


def probe_entry(cfg: TrainConfig) -> ProbeEntry:
    """The registry entry of the frozen run's probe; an unknown name is a UserError naming the nearest ones."""
    return PROBES.get(probe_name(cfg))


def make_probe(cfg: TrainConfig) -> FeatureProbe:
    """The frozen run's probe, unfitted, built from its settings by name."""
    return probe_entry(cfg).build(cfg)
