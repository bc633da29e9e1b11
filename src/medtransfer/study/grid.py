"""Expand a study into run specs; a run's id is a stable hash of its resolved configuration."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from medtransfer.config import TrainConfig
from medtransfer.errors import UserError
from medtransfer.hashing import json_digest
from medtransfer.study.schema import DATA_FIELDS, SETTING_FIELDS, Study

# Settings that change where or how fast a run computes, never its result: not part of the run id.
NOT_IN_ID = ("out", "cache_dir", "workers", "device", "image_cache")


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: its resolved configuration and its id."""

    run_id: str
    config: TrainConfig

    @property
    def label(self) -> str:
        """Human-readable name: task, backbone, mode/head, fraction, fold, seed."""
        c = self.config
        parts = [c.task or "", c.backbone, c.mode + (f"-{c.head}" if c.mode == "frozen" else "")]
        if c.train_fraction < 1:
            parts.append(f"frac{c.train_fraction:g}")
        if c.folds:
            parts.append(f"fold{c.fold}")
        parts.append(f"s{c.seed}")
        return "__".join(parts)


def run_id(cfg: TrainConfig) -> str:
    """sha256 of the configuration, without the settings that cannot change results."""
    payload = {k: v for k, v in cfg.model_dump().items() if k not in NOT_IN_ID}
    return json_digest(payload, 12)


def _settings(*layers: object) -> dict:
    """Merge setting layers; later layers win, unset (None) values do not override."""
    merged: dict = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.model_dump().items() if k in SETTING_FIELDS and v is not None})
    return merged


def expand(study: Study, out: Path) -> list[RunSpec]:
    """Datasets × backbones × modes (× heads) × fractions × folds × seeds, ordered so that frozen runs sharing
    a feature cache (same data and backbone) run back to back. Invalid combinations are reported together."""
    specs, problems = [], []
    folds = list(range(study.folds)) if study.folds else [0]
    for task, dataset in _datasets(study):
        data_options = {k: v for k, v in dataset.model_dump().items() if k in DATA_FIELDS}
        for backbone in study.backbones:
            for mode, mode_spec in study.modes.items():
                heads = mode_spec.heads if mode == "frozen" else ["linear"]
                settings = _settings(study.train, dataset, mode_spec, backbone)
                for head in heads:
                    for fraction in study.train_fractions:
                        for fold in folds:
                            for seed in study.seeds:
                                values = {**data_options, **settings, "task": task, "backbone": backbone.name,
                                          "mode": mode, "head": head, "seed": seed, "train_fraction": fraction,
                                          "folds": study.folds, "fold": fold}
                                try:
                                    cfg = TrainConfig(**values)
                                except ValidationError as exc:
                                    problems += [f"{task}/{backbone.name}/{mode}: {'.'.join(map(str, e['loc']))}: "
                                                 f"{e['msg']}" for e in exc.errors()]
                                    continue
                                rid = run_id(cfg)
                                spec = RunSpec(rid, cfg)
                                target = out / "runs" / f"{_safe(spec.label)}__{rid}"
                                specs.append(RunSpec(rid, cfg.model_copy(update={"out": str(target)})))
    if problems:
        raise UserError("study", "; ".join(dict.fromkeys(problems)), "fix these settings in the study file")
    return specs


def _datasets(study: Study) -> list[tuple[str, object]]:
    """Named datasets; a volume set in `separate` mode becomes one single-modality dataset per modality."""
    out = []
    for task, dataset in study.datasets.items():
        if dataset.modalities and dataset.modality_mode == "separate":
            out += [(f"{task}-{m}", dataset.model_copy(update={"modalities": [m], "modality_mode": "fused"}))
                    for m in dataset.modalities]
        else:
            out.append((task, dataset))
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)
