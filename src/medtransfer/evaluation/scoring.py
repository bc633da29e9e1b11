"""Evaluation of one run on the whole of each split: every metric with its bootstrap CI, per class, per patient.

A binary task's operating point is fixed on val (Youden's J) and then applied to test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtransfer.config import TrainConfig
from medtransfer.data.table import SampleTable
from medtransfer.errors import UserError
from medtransfer.evaluation.bootstrap import BootstrapSpec, bootstrap_ci
from medtransfer.evaluation.metrics import confusion, youden_threshold
from medtransfer.evaluation.prediction_tables import EVAL_SPLITS, patient_predictions
from medtransfer.progress import Reporter


def check_finite(probs: dict[str, np.ndarray]) -> None:
    """Refuse NaN/inf probabilities before any metric: they would crash scikit-learn or fool the metrics."""
    bad = {split: int((~np.isfinite(p)).any(axis=1).sum()) for split, p in probs.items()}
    if any(bad.values()):
        counts = ", ".join(f"{n} of {len(probs[s])} {s}" for s, n in bad.items() if n)
        raise UserError("predictions", f"{counts} predictions are NaN or inf: the model's features or weights hold "
                        "NaN or inf (a checkpoint with NaN values, NaN pixels, or training that diverged)",
                        "check --weights and the data, or lower --lr")


def _per_class(ci: dict[str, dict], classes: list[str]) -> dict[str, dict]:
    """Moves the per-class recalls (`recall_c<k>`) out of the flat metrics into {class: {recall: CI}}."""
    return {name: {"recall": ci.pop(f"recall_c{k}")} for k, name in enumerate(classes) if f"recall_c{k}" in ci}


def _score_splits(y: dict[str, np.ndarray], probs: dict[str, np.ndarray], groups: dict[str, np.ndarray | None],
                  spec: BootstrapSpec, classes: list[str], ordinal: bool, reporter: Reporter) -> dict:
    """Val and test metrics with CIs; a binary task's operating point is fixed on val (Youden's J), then applied."""
    # Both classes are in val (splits guarantee it for images; pooling could in principle leave patients of one).
    threshold = youden_threshold(y["val"], probs["val"]) if len(classes) == 2 and len(set(y["val"])) == 2 else None
    out: dict = {"per_class": {}}
    for split in EVAL_SPLITS:
        with reporter.task(f"bootstrap {split}", spec.n) as advance:
            out[split] = bootstrap_ci(y[split], probs[split], spec, groups[split], advance, threshold=threshold,
                                      ordinal=ordinal)
        out["per_class"][split] = _per_class(out[split], classes)
        counts = np.bincount(y[split], minlength=len(classes))
        for k, name in enumerate(classes):
            out["per_class"][split].setdefault(name, {})["n"] = int(counts[k])
    if threshold is not None:
        out["threshold"] = {"value": threshold, "rule": "Youden's J on val", "positive_class": classes[1]}
    return out


def evaluate(cfg: TrainConfig, table: SampleTable, frame: pd.DataFrame, rows: dict[str, np.ndarray],
             probs: dict[str, np.ndarray], reporter: Reporter) -> dict:
    """Every metric with its CI on val and test (over patients when there are groups), counts and confusion."""
    spec = BootstrapSpec(n=cfg.bootstrap, seed=cfg.seed)
    target = frame["target"].to_numpy()
    grouped = table.has_groups
    y = {s: target[rows[s]] for s in EVAL_SPLITS}
    groups = {s: frame["group"].to_numpy()[rows[s]] if grouped else None for s in EVAL_SPLITS}
    out = _score_splits(y, probs, groups, spec, table.classes, table.ordinal, reporter)
    out["confusion"] = {s: confusion(y[s], probs[s]) for s in EVAL_SPLITS}
    out["counts"] = {s: {name: int(n) for name, n in zip(table.classes, np.bincount(target[r], minlength=len(
        table.classes)))} for s, r in rows.items()}
    out["bootstrap"] = {"n": spec.n, "level": spec.level, "unit": "group" if grouped else "sample", "seed": spec.seed}
    out["ordinal"] = table.ordinal
    if grouped:
        out["patient"] = _patient_metrics(cfg, table, frame, rows, probs, spec, reporter)
    return out


def _patient_metrics(cfg: TrainConfig, table: SampleTable, frame: pd.DataFrame, rows: dict[str, np.ndarray],
                     probs: dict[str, np.ndarray], spec: BootstrapSpec, reporter: Reporter) -> dict:
    """The same metrics with CIs over patients, one pooled prediction per patient (its own val threshold)."""
    pooled = patient_predictions(frame, rows, probs, cfg.patient_agg)
    out = _score_splits({s: p.y for s, p in pooled.items()}, {s: p.prob for s, p in pooled.items()},
                        dict.fromkeys(EVAL_SPLITS), spec, table.classes, table.ordinal, reporter)
    out.update({f"n_{s}": int(len(p.ids)) for s, p in pooled.items()})
    out["aggregation"] = cfg.patient_agg
    return out
