"""Expand a study into run specs; a run's id is a stable hash of the settings where it departs from the defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from medtransfer.config import TrainConfig
from medtransfer.hashing import json_digest
from medtransfer.study.schema import DATA_FIELDS, SETTING_FIELDS, Study
from medtransfer.validation import one_error, problems

# Settings that change where or how fast a run computes, never its result: not part of the run id.
NOT_IN_ID = ("out", "cache_dir", "workers", "device", "image_cache")
# Part of every run id. Bump it only on purpose, when the same settings no longer compute the same run (a changed
# default included: ids hash only the settings that differ from the defaults); every finished study then re-runs.
RUN_ID_SCHEMA = 2


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
    """Short sha256 of RUN_ID_SCHEMA and the settings that differ from the defaults of the run's mode."""
    # Only departures from the defaults: an option added later, with a default, changes no finished run's id.
    # Defaults are compared as resolved (a mode's lr, epochs, ...), so a value set to its default hashes as unset.
    model = type(cfg)
    always = tuple(name for name, field in model.model_fields.items() if field.is_required()) + ("mode",)
    # The same required settings and mode with nothing else set: what "the defaults" resolve to for this run.
    defaults = model(**{name: getattr(cfg, name) for name in always}).model_dump(mode="json")
    values = cfg.model_dump(mode="json")
    if values["weights"] == "imagenet":  # timm's older name of `pretrained`, the default before: ids stay as they were
        values["weights"] = "pretrained"
    changed = {k: v for k, v in values.items() if k in always or (k not in NOT_IN_ID and v != defaults[k])}
    return json_digest({"schema": RUN_ID_SCHEMA, "settings": changed}, 12)


def _settings(*layers: object) -> dict:
    """Merge setting layers; later layers win, unset (None) values do not override."""
    merged: dict = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.model_dump().items() if k in SETTING_FIELDS and v is not None})
    return merged


def expand(study: Study, out: Path) -> list[RunSpec]:
    """Datasets × backbones × modes (× heads) × fractions × folds × seeds, ordered so that frozen runs sharing
    a feature cache (same data and backbone) run back to back. Invalid combinations are reported together."""
    specs, found = [], []
    folds = list(range(study.folds)) if study.folds else [0]
    for name, task, dataset in _datasets(study):
        data_options = {k: v for k, v in dataset.model_dump().items() if k in DATA_FIELDS}
        for backbone in (b for b in study.backbones if b.datasets is None or name in b.datasets):
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
                                    found += problems(exc, f"{task}/{backbone.name}/{mode}: ")
                                    continue
                                rid = run_id(cfg)
                                spec = RunSpec(rid, cfg)
                                target = out / "runs" / f"{_safe(spec.label)}__{rid}"
                                specs.append(RunSpec(rid, cfg.model_copy(update={"out": str(target)})))
    if found:
        raise one_error("study", found, "fix these settings in the study file")
    return specs


def _datasets(study: Study) -> list[tuple[str, str, object]]:
    """(dataset name, task, dataset): a volume set in `separate` mode becomes one single-modality task per modality."""
    out = []
    for name, dataset in study.datasets.items():
        if dataset.modalities and dataset.modality_mode == "separate":
            out += [(name, f"{name}-{m}", dataset.model_copy(update={"modalities": [m], "modality_mode": "fused"}))
                    for m in dataset.modalities]
        else:
            out.append((name, name, dataset))
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)
