"""The one declaration of the metrics: what compute_metrics returns, the tables' columns and the ranges follow it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medtransfer.errors import UserError
from medtransfer.evaluation.metric_registry import (
    METRIC_REGISTRY,
    METRICS,
    metric_range,
    more_metrics,
    paper_metrics,
    patient_metrics,
)
from medtransfer.evaluation.metrics import compute_metrics
from medtransfer.evaluation.resampled import metrics_for_counts


def _split(k: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(k)
    y = np.arange(n) % k
    return y, rng.dirichlet(np.ones(k), n)


def _scalar(names: list[str]) -> list[str]:
    return [n for n in names if not n.startswith("recall_c")]


@pytest.mark.parametrize(("k", "ordinal"), [(2, False), (3, True), (4, False)])
def test_computed_metrics_are_the_declared_ones_in_declared_order(k: int, ordinal: bool) -> None:
    y, prob = _split(k)
    point = _scalar(list(compute_metrics(y, prob, ordinal=ordinal)))
    assert point == [n for n in METRICS if n in point]
    assert ("kappa_quadratic" in point) == ordinal and ("auprc" in point) == (k == 2)
    counts = np.random.default_rng(1).multinomial(len(y), np.full(len(y), 1 / len(y)), size=3)
    resampled = _scalar(list(metrics_for_counts(y, prob, counts, ordinal=ordinal)))
    assert sorted(resampled) == sorted(point)


def test_every_metric_sits_in_exactly_one_report_table() -> None:
    paper, more = paper_metrics(), more_metrics()
    assert paper == ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "auroc")
    assert set(paper).isdisjoint(more) and sorted(paper + more) == sorted(METRICS)
    assert patient_metrics()[:len(paper)] == paper
    assert all(METRIC_REGISTRY.get(n).patient for n in patient_metrics()[len(paper):])
    columns = [METRIC_REGISTRY.get(n).column for n in METRICS]
    assert len(set(columns)) == len(columns)  # one header per metric, never two columns of one name


def test_ranges_follow_the_declaration() -> None:
    for name in METRICS:
        metric = METRIC_REGISTRY.get(name)
        assert metric_range(name) == (metric.low, metric.high)
    assert metric_range("kappa")[0] == -1.0 and metric_range("brier")[1] == 2.0
    assert metric_range("calibration_slope") == (-math.inf, math.inf)
    assert metric_range("recall_c12") == (0.0, 1.0)  # per-class recall, not declared: a share


def test_an_unknown_metric_names_the_nearest() -> None:
    with pytest.raises(UserError, match="did you mean 'auroc'"):
        METRIC_REGISTRY.get("aurco")


def test_direction_is_lower_for_errors_and_neither_for_calibration() -> None:
    lower = {n for n in METRICS if METRIC_REGISTRY.get(n).higher_is_better is False}
    neither = {n for n in METRICS if METRIC_REGISTRY.get(n).higher_is_better is None}
    assert lower == {"brier", "ece"} and neither == {"calibration_slope", "calibration_intercept"}
