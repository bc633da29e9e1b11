"""Terminal tables: one run's metrics, and the backbone catalog."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from medtransfer.evaluation.metrics import METRICS
from medtransfer.report.render import ci_cell


def cell(entry: dict) -> str:
    """A metrics.json entry as the paper's cell, `value [low, high]` in percent (a dash when undefined)."""
    return ci_cell(entry["value"], entry["low"], entry["high"])


def print_metrics(console: Console, metrics: dict) -> None:
    """Val and test metrics of one run with their 95% CIs."""
    unit = metrics["bootstrap"]["unit"]
    table = Table(title=f"95% CI: percentile bootstrap over {unit}s, {metrics['bootstrap']['n']} resamples")
    table.add_column("metric")
    for split in ("val", "test"):
        table.add_column(f"{split} (n={metrics[f'n_{split}']})")
    for name in METRICS:
        if name in metrics["test"]:  # binary-only and ordinal-only metrics are absent elsewhere
            table.add_row(name, cell(metrics["val"][name]), cell(metrics["test"][name]))
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
        table.add_row(entry.name, entry.timm_name, entry.note, "cached" if hub_cached(entry.timm_name) else "not cached")
    make_console().print(table)
