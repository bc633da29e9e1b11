"""Terminal tables: one run's metrics, and the backbone catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from medtransfer.evaluation.metric_registry import METRIC_REGISTRY, METRICS
from medtransfer.report.render import metric_cell

if TYPE_CHECKING:
    from medtransfer.rundir import RunMetrics


def print_metrics(console: Console, metrics: RunMetrics) -> None:
    """Val and test metrics of one run with their 95% CIs, named and scaled as the metric registry declares."""
    boot = metrics.bootstrap
    table = Table(title=f"95% CI: percentile bootstrap over {boot.unit}s, {boot.n} resamples; shares in %")
    table.add_column("metric")
    for split, n in (("val", metrics.n_val), ("test", metrics.n_test)):
        table.add_column(f"{split} (n={n})")
    for name in METRICS:
        if name in metrics.test:  # binary-only and ordinal-only metrics are absent elsewhere
            label = METRIC_REGISTRY.get(name).label
            table.add_row(label, metric_cell(name, metrics.val[name]), metric_cell(name, metrics.test[name]))
    console.print(table)


def print_catalog() -> None:
    """Every catalog backbone with its timm name and whether its weights are cached locally."""
    from medtransfer.models.catalog import CATALOG
    from medtransfer.models.weights import hub_cached
    from medtransfer.progress import make_console

    table = Table(title="medtransfer backbones (any other timm model name works too)")
    for column in ("name", "timm model", "weights", "offline"):
        table.add_column(column, no_wrap=column != "weights")
    for entry in CATALOG.values():
        offline = "cached" if hub_cached(entry.timm_name) else "not cached"
        table.add_row(entry.name, entry.timm_name, entry.note, offline)
    make_console().print(table)
