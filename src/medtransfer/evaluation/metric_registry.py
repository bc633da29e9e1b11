"""Every scalar metric, declared once: its names, range, direction and table, in metrics.json order.

compute_metrics (metrics.py) and metrics_for_counts (resampled.py) compute them; the CLI, the report tables and
figures, and the seed intervals' clipping read what they need from here. A result dict holds only the metrics that
apply (binary-only ones for two classes, kappa_quadratic for ordinal classes) and, besides these, recall_c{k} for
every class k, which is not declared here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medtransfer.registry import Registry


@dataclass(frozen=True)
class Metric:
    """How one metric is named, bounded and shown.

    higher_is_better is None where neither direction is better (calibration slope and intercept have an ideal
    value, 1 and 0). paper_column: its place (1, 2, ...) in the paper's main results table, None when it is not
    there; patient: also shown in the patient-level table. percent: tables show it as a percentage (a share)
    rather than as a plain number. every_class: it is degenerate on a set that lacks one of the classes (macro F1
    counts the absent class as 0, kappa is 0 with one class, PPV 0 without positives, AUPRC 1 without negatives,
    the calibration fit diverges), so such a set reports no value for it. AUROC and balanced accuracy average over
    the classes present, as on any split, and stay.
    """

    name: str
    label: str
    column: str
    higher_is_better: bool | None = True
    low: float = 0.0
    high: float = 1.0
    percent: bool = True
    paper_column: int | None = None
    patient: bool = False
    every_class: bool = False


METRIC_REGISTRY: Registry[Metric] = Registry("metric")

for _metric in (
    Metric("accuracy", "Accuracy", "Accuracy", paper_column=1),
    Metric("balanced_accuracy", "Balanced accuracy", "Balanced acc.", patient=True),
    Metric("auroc", "AUROC", "AUROC", paper_column=5),
    Metric("auprc", "AUPRC", "AUPRC", every_class=True),
    Metric("precision_weighted", "Precision (weighted)", "Precision", paper_column=2),
    Metric("recall_weighted", "Recall (weighted)", "Recall", paper_column=3),
    Metric("f1_weighted", "F1 (weighted)", "F1", paper_column=4),
    Metric("f1_macro", "F1 (macro)", "F1 macro", every_class=True),
    # Agreement beyond chance: below 0 is worse than chance.
    Metric("kappa", "Cohen's kappa", "Kappa", low=-1.0, patient=True, every_class=True),
    Metric("kappa_quadratic", "Quadratic kappa", "Quadratic kappa", low=-1.0, every_class=True),
    Metric("sensitivity", "Sensitivity", "Sensitivity"),
    Metric("specificity", "Specificity", "Specificity"),
    Metric("ppv", "PPV", "PPV", every_class=True),
    Metric("npv", "NPV", "NPV", every_class=True),
    # The multi-class Brier score sums squared errors over the classes, so it reaches 2.
    Metric("brier", "Brier score", "Brier", higher_is_better=False, high=2.0, percent=False),
    Metric("ece", "ECE", "ECE", higher_is_better=False),
    Metric("calibration_slope", "Calibration slope", "Cal. slope", None, -math.inf, math.inf, percent=False,
           every_class=True),
    Metric("calibration_intercept", "Calibration intercept", "Cal. intercept", None, -math.inf, math.inf,
           percent=False, every_class=True),
):
    METRIC_REGISTRY.register(_metric.name, _metric)
del _metric

# Scalar metric names in display order: the order of every metrics dict and of metrics.json.
METRICS: tuple[str, ...] = METRIC_REGISTRY.names()


def metric_range(name: str) -> tuple[float, float]:
    """Where a metric can lie: shares in [0, 1], kappas in [-1, 1], the multi-class Brier score in [0, 2]; names not
    declared here (per-class recall_c{k}) are shares."""
    if name not in METRIC_REGISTRY:
        return 0.0, 1.0
    metric = METRIC_REGISTRY.get(name)
    return metric.low, metric.high


def paper_metrics() -> tuple[str, ...]:
    """The metrics of the paper's main results table, in its column order."""
    placed = [m for m in map(METRIC_REGISTRY.get, METRICS) if m.paper_column is not None]
    return tuple(m.name for m in sorted(placed, key=lambda m: m.paper_column))


def patient_metrics() -> tuple[str, ...]:
    """The patient-level table's metrics: the paper's, then those marked for patients."""
    return paper_metrics() + tuple(n for n in METRICS if METRIC_REGISTRY.get(n).patient)


def more_metrics() -> tuple[str, ...]:
    """Every metric not in the paper's table, in display order: the report's second table."""
    return tuple(n for n in METRICS if METRIC_REGISTRY.get(n).paper_column is None)
