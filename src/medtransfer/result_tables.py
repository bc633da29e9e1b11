"""Terminal tables: one run's metrics, a study's results, and the backbone catalog."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from medtransfer.config import TrainConfig, task_name
from medtransfer.evaluation.metric_registry import METRIC_REGISTRY, METRICS
from medtransfer.report.collect import NOT_SETTINGS, SETTING, extra_settings, mode_label
from medtransfer.report.render import metric_cell
from medtransfer.rundir import RunDir

if TYPE_CHECKING:
    from medtransfer.rundir import RunMetrics
    from medtransfer.study.grid import RunSpec
    from medtransfer.study.run import StudyOutcome

RESULT_METRICS = ("auroc", "accuracy")  # the study table's test columns: the paper's headline metrics
NOT_FINISHED = "not finished"


def metrics_table(metrics: RunMetrics) -> Table:
    """Val and test metrics of one run with their 95% CIs, named and scaled as the metric registry declares."""
    boot = metrics.bootstrap
    table = Table(title=f"95% CI: percentile bootstrap over {boot.unit}s, {boot.n} resamples; shares in %")
    table.add_column("metric")
    for split, n in (("val", metrics.n_val), ("test", metrics.n_test)):
        table.add_column(f"{split} (n={n})")
    external = metrics.external or {}
    for name, block in external.items():  # each external set whole, then its gap to test (metrics.json says how)
        table.add_column(f"external {name} (n={block.n})")
        table.add_column(f"gap test − {name}")
    for name in METRICS:
        if name in metrics.test:  # binary-only and ordinal-only metrics are absent elsewhere
            label = METRIC_REGISTRY.get(name).label
            cells = [metric_cell(name, metrics.val[name]), metric_cell(name, metrics.test[name])]
            for block in external.values():  # a metric undefined there (a class missing) is absent
                cells += [metric_cell(name, part[name]) if name in part else "n/a" for part in (block.metrics,
                                                                                               block.gap)]
            table.add_row(label, *cells)
    return table


def _mode(cfg: TrainConfig) -> str:
    """The mode as the report names it (`fine-tuned`, `frozen + mlp`), so a setup reads the same here and there."""
    return mode_label(cfg.mode, f"{cfg.head} sweep" if cfg.head_sweep else cfg.head)


# Settings that tell a study's runs apart beyond backbone and mode: a column only where they vary (the task before
# the backbone, as in the paper's table).
VARYING = {"task": lambda c: task_name(c.task, c.data), "fraction": lambda c: f"{c.train_fraction:g}",
           "fold": lambda c: str(c.fold), "seed": lambda c: str(c.seed)}
# Shown by the columns above, or by backbone and mode; any other setting that tells setups apart goes in `settings`.
SHOWN = ("data", "task", "weights", "train_fraction", "fold", "folds", "seed", "backbone", "mode", "head",
         "head_sweep")


def other_settings(specs: list[RunSpec]) -> list[str]:
    """The settings that tell setups apart beyond backbone and mode: the weights where they vary, and the others by
    the report's own rule (`collect.extra_settings`: pooling, an lr grid, …, never a mode's defaults)."""
    runs = pd.DataFrame([{f"{SETTING}{k}": v for k, v in s.config.model_dump(mode="json").items()} for s in specs])
    keys = [f"{SETTING}{n}" for n in TrainConfig.model_fields if n not in SHOWN and n not in NOT_SETTINGS]
    weights = ["weights"] if runs[f"{SETTING}weights"].nunique() > 1 else []
    return weights + [column.removeprefix(SETTING) for column in extra_settings(runs, keys)]


def finished_records(specs: list[RunSpec]) -> list[RunMetrics | None]:
    """Each run's metrics, or None while it has no DONE (failed, interrupted or not run yet): read once for the
    table and its summary line."""
    return [_finished(spec) for spec in specs]


def _finished(spec: RunSpec) -> RunMetrics | None:
    run = RunDir(Path(spec.config.out))
    return run.metrics() if run.is_complete() else None


def _best(record: RunMetrics, cfg: TrainConfig) -> str:
    return f"k {record.best_epoch}" if cfg.mode == "frozen" and cfg.head == "knn" else str(record.best_epoch)


def results_table(specs: list[RunSpec], records: list[RunMetrics | None], title: str) -> Table:
    """One row per run of a study (`records`: finished_records(specs)): backbone, mode, what varies, test AUROC and
    accuracy with CIs, best epoch."""
    units = sorted({r.bootstrap.unit for r in records if r is not None})
    varying = [n for n, value in VARYING.items() if len({value(s.config) for s in specs}) > 1]
    # Text, not markup: a study's path may hold [brackets].
    table = Table(title=Text(f"{title}: test split, % with 95% CI (bootstrap over {' or '.join(units) or '?'}s)"))
    task, rest = [n for n in varying if n == "task"], [n for n in varying if n != "task"]  # the task leads
    others = other_settings(specs)  # two setups of one backbone and mode must not read alike
    settings = [", ".join(f"{n}={getattr(s.config, n)}" for n in others) for s in specs]
    for column in (*task, "backbone", "mode", *rest, *(["settings"] if others else []),
                   *(f"test {METRIC_REGISTRY.get(m).label}" for m in RESULT_METRICS), "best epoch"):
        wraps = column in ("backbone", "mode", "settings")  # hub names, folders and settings wrap rather than cut
        table.add_column(column, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    for spec, record, setting in zip(specs, records, settings, strict=True):
        cfg = spec.config
        cells = [metric_cell(m, record.test[m]) for m in RESULT_METRICS] if record else [NOT_FINISHED] * 2
        best = _best(record, cfg) if record else "–"
        table.add_row(*(VARYING[n](cfg) for n in task), cfg.backbone, _mode(cfg), *(VARYING[n](cfg) for n in rest),
                      *([setting] if others else []), *cells, best)
    return table


def study_summary(outcome: StudyOutcome, records: list[RunMetrics | None], seconds: float) -> str:
    """'4 run(s) in 63 s, 0 reused, 1 not finished. Report: PATH', the line under a study's results table."""
    unfinished = sum(record is None for record in records)
    missing = f", {unfinished} not finished" if unfinished else ""
    return f"{outcome.ran} run(s) in {seconds:.0f} s, {outcome.skipped} reused{missing}. Report: {outcome.report}"


def print_catalog() -> None:
    """Every catalog backbone: family, model, input size, feature width, licence, gated, and whether its weights are
    in the local cache."""
    from medtransfer.models.backbone import catalog_rows
    from medtransfer.progress import make_console

    rows = catalog_rows()
    table = Table(title="medtransfer backbones (also: any timm name, hf-hub:ORG/NAME, hf:ORG/NAME or hf:FOLDER, "
                        "open_clip:NAME)")
    for column in ("name", "family", "input", "features", "licence", "access", "weights"):
        table.add_column(column, no_wrap=column != "licence", justify="right" if column in ("input", "features")
                         else "left")
    for row in rows:
        features = f"{row['features']} ({row['pooling']})" if row["features"] else row.get("problem", "")
        table.add_row(row["name"], row["family"], str(row["input"] or ""), features, row["licence"],
                      "gated" if row["gated"] else "open", "cached" if row["offline"] else "not cached")
    console = make_console()
    console.print(table)
    for row in rows:  # what each one is, under the table: the model ids are too long for a column
        console.print(f"[bold]{row['name']}[/bold]: {escape(row['model'])} — {escape(row['note'])}",
                      highlight=False)

