"""Scoring beyond the internal test split: each external set as a whole, and the test split's subgroups.

Both use the operating point fixed on val (a binary task's Youden threshold), as the internal test does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtransfer.config import TrainConfig
from medtransfer.data.external import ExternalSet
from medtransfer.data.table import SampleTable, metadata_column
from medtransfer.errors import UserError
from medtransfer.evaluation.bootstrap import BootstrapSpec, bootstrap_ci
from medtransfer.evaluation.generalisation import ScoredSet, external_spec, gap_ci, gap_label, without_every_class
from medtransfer.evaluation.metrics import confusion
from medtransfer.evaluation.patients import pool_by_patient
from medtransfer.data.subgroup_spec import SubgroupColumn, parse_subgroups
from medtransfer.evaluation.subgroups import subgroup_analysis, subgroup_labels
from medtransfer.progress import Reporter


def _groups(frame: pd.DataFrame) -> np.ndarray | None:
    group = frame["group"]
    return group.to_numpy() if group.notna().all() else None


def _drop_class_recalls(metrics: dict) -> None:
    for name in [n for n in metrics if n.startswith("recall_c")]:
        del metrics[name]


def _per_class(metrics: dict[str, dict], y: np.ndarray, classes: list[str]) -> dict[str, dict]:
    """{class: {recall: CI (where the class has samples), n}}; the recall_c<k> entries move out of `metrics`."""
    counts = np.bincount(y, minlength=len(classes))
    out: dict[str, dict] = {}
    for k, name in enumerate(classes):
        recall = metrics.pop(f"recall_c{k}", None)
        out[name] = ({"recall": recall} if recall is not None and counts[k] else {}) | {"n": int(counts[k])}
    return out


def score_external(ext: ExternalSet, probs: np.ndarray, internal: ScoredSet, spec: BootstrapSpec,
                   threshold: float | None, patient_threshold: float | None, aggregation: str,
                   reporter: Reporter) -> dict:
    """One external set's record for metrics.json: metrics with CIs (over its patients where it has them), counts,
    confusion, patient-level metrics, and the gap to the internal test with its interval."""
    table = ext.table
    y = table.frame["target"].to_numpy()
    groups = _groups(table.frame)
    own = external_spec(spec, ext.name)
    ordinal = table.ordinal
    incomplete = bool(ext.missing)  # the metrics that need every class are NaN here, and so are their gaps
    with reporter.task(f"bootstrap external {ext.name}", own.n) as advance:
        metrics = without_every_class(bootstrap_ci(y, probs, own, groups, advance, threshold=threshold,
                                                   ordinal=ordinal), incomplete)
    per_class = _per_class(metrics, y, table.classes)
    scored = ScoredSet(ext.name, y, [probs], groups, [threshold])
    gap = gap_ci(internal, scored, spec, ordinal=ordinal)
    _drop_class_recalls(gap)  # per-class recalls are in per_class, not among the scalar metrics
    record = {"data": ext.data, "n": len(y), "classes_missing": ext.missing,
              "counts": {name: int(n) for name, n in zip(table.classes, np.bincount(y, minlength=len(table.classes)))},
              "metrics": metrics, "per_class": per_class, "confusion": confusion(y, probs),
              "bootstrap": {"n": own.n, "level": own.level, "unit": scored.unit, "seed": own.seed},
              "gap": gap, "gap_interval": gap_label(1, internal.unit, scored.unit, spec.n, level=spec.level)}
    if groups is not None:
        pooled = pool_by_patient(groups, y, probs, aggregation)
        patient = without_every_class(bootstrap_ci(pooled.y, pooled.prob, own, None, threshold=patient_threshold,
                                                   ordinal=ordinal), incomplete)
        _drop_class_recalls(patient)
        record["n_groups"] = int(len(pooled.ids))
        record["patient"] = {"metrics": patient, "n": int(len(pooled.ids)), "aggregation": aggregation}
    return record


def labels_of(frame: pd.DataFrame, column: SubgroupColumn) -> np.ndarray:
    """Each row's subgroup label; a column that cannot be binned is refused, naming it."""
    try:
        return subgroup_labels(frame[metadata_column(column.column)], column)
    except ValueError as exc:
        raise UserError(f"--subgroups {column.text}", str(exc), "give bins only for a numeric column, or fix its "
                        "values") from None


def check_subgroups(cfg: TrainConfig, table: SampleTable) -> None:
    """Every subgroup column labels every row (bins of a numeric column), checked before any training."""
    for column in parse_subgroups(cfg.subgroups) or []:
        labels_of(table.frame, column)


def score_subgroups(cfg: TrainConfig, table: SampleTable, frame: pd.DataFrame, rows: np.ndarray, probs: np.ndarray,
                    threshold: float | None, spec: BootstrapSpec) -> dict:
    """The test split's subgroups per column, for metrics.json: per-subgroup metrics, worst value and largest gap."""
    test = frame.iloc[rows]
    scored = ScoredSet("test", test["target"].to_numpy(), [probs], _groups(test), [threshold])
    out = {}
    for column in parse_subgroups(cfg.subgroups) or []:
        block = subgroup_analysis(scored, labels_of(test, column), spec, cfg.subgroup_min, ordinal=table.ordinal)
        for part in [block["worst"], block["gap"], *(s["metrics"] for s in block["subgroups"].values())]:
            _drop_class_recalls(part)  # the scalar metrics, as the test split's own record has them
        out[column.text] = block | {"bins": list(column.edges) if column.edges else None, "split": "test"}
    return out
