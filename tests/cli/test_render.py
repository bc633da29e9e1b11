"""The terminal results table: each metric named and scaled as the metric registry declares it."""

from __future__ import annotations

import io

from rich.console import Console

from medtransfer.cli.render import print_metrics
from medtransfer.evaluation.metric_registry import METRIC_REGISTRY
from medtransfer.rundir import RunMetrics


def record(values: dict[str, float]) -> RunMetrics:
    block = {name: {"value": v, "low": v - 0.01, "high": v + 0.01} for name, v in values.items()}
    return RunMetrics.build({"val": block, "test": block, "confusion": {"test": [[1, 0], [0, 1]]},
                             "bootstrap": {"n": 200, "level": 0.95, "unit": "group", "seed": 0},
                             "n_train": 10, "n_val": 4, "n_test": 6, "classes": ["a", "b"], "best_epoch": 1,
                             "notes": [], "timing": {}})


def printed(metrics: RunMetrics) -> str:
    out = io.StringIO()
    print_metrics(Console(file=out, width=200), metrics)
    return out.getvalue()


def test_shares_print_in_percent_and_scores_plain():
    text = printed(record({"auroc": 0.8766, "brier": 0.1234, "calibration_slope": 1.25}))
    assert "87.7 [86.7, 88.7]" in text
    assert "0.123 [0.113, 0.133]" in text and "12.3" not in text
    assert "1.250 [1.240, 1.260]" in text and "125.0" not in text
    assert "200 resamples" in text and "over groups" in text and "(n=4)" in text and "(n=6)" in text


def test_rows_carry_the_registry_labels_in_registry_order():
    names = ("auroc", "brier", "kappa", "accuracy")
    text = printed(record(dict.fromkeys(names, 0.5)))
    labels = [METRIC_REGISTRY.get(n).label for n in ("accuracy", "auroc", "kappa", "brier")]  # METRICS order
    positions = [text.find(label) for label in labels]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
    assert "sensitivity" not in text.lower()  # absent metrics get no row
