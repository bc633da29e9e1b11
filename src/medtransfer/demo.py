"""`medtransfer demo`: the shipped demo study (synthetic images, random-init backbones), ending in a report."""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path

from rich.table import Table

from medtransfer.progress import Reporter
from medtransfer.report.render import metric_cell
from medtransfer.rundir import RunDir
from medtransfer.study.run import StudyOutcome, run_study


def demo_study() -> Path:
    """The demo study file shipped inside the package (also at studies/demo.yaml)."""
    return Path(str(files("medtransfer") / "studies" / "demo.yaml"))


def run_demo(out: Path, quiet: bool = False) -> StudyOutcome:
    """Run the demo study (finished runs are reused), print the results table and where the report is."""
    reporter = Reporter(quiet)
    started = time.perf_counter()
    outcome = run_study(demo_study(), out, resume=True, reporter=reporter)
    table = Table(title="medtransfer demo (synthetic images): test split, % with 95% CI (bootstrap over patients)")
    for column in ("backbone", "mode", "test AUROC", "test accuracy", "best epoch"):
        table.add_column(column, no_wrap=True)
    for spec in outcome.specs:
        record = RunDir(spec.config.out).metrics()
        auroc, accuracy = (metric_cell(name, record.test[name]) for name in ("auroc", "accuracy"))
        table.add_row(spec.config.backbone, spec.config.mode, auroc, accuracy, str(record.best_epoch))
    reporter.console.print(table)
    reporter.console.print(f"{outcome.ran} run(s) in {time.perf_counter() - started:.0f} s, {outcome.skipped} reused. "
                           f"Report: {outcome.report}. Weights were random (`none`, offline); with "
                           "`--weights imagenet` frozen features become useful.", markup=False, highlight=False)
    return outcome
