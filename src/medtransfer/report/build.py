"""`medtransfer report RUNS_DIR`: tables, figures and report.html in RUNS_DIR/report, replaced whole or not at all."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from medtransfer.errors import UserError
from medtransfer.report.aggregate import Summary, summarise
from medtransfer.report.collect import REPORT_DIR, RunIndex, collect_runs
from medtransfer.report.compact import write_compact
from medtransfer.report.figures import write_figures
from medtransfer.report.html import ReportParts, write_html
from medtransfer.report.provenance import provenance_table
from medtransfer.report.render import Table
from medtransfer.report.shift import ShiftSummary, shown_metrics, summarise_shift
from medtransfer.report.style import SetupStyle
from medtransfer.report.tables import (
    cost_table,
    duplicates_table,
    external_pairs_table,
    external_table,
    main_table,
    more_table,
    pairwise_table,
    patient_table,
    per_class_table,
    subgroups_table,
    write_standalone,
    write_table,
)

PROVENANCE = "Provenance per run"


def _shift_tables(shift: ShiftSummary, metric: str) -> dict[str, tuple[str, Table]]:
    """The external-set and subgroup tables, where the runs have external sets or subgroups."""
    tables = {}
    if len(shift.external):
        tables["external"] = ("Internal vs external", external_table(shift.external, metric, shift.external_notes))
    if len(shift.external_pairs):
        tables["external_pairwise"] = ("Paired comparisons on external sets", external_pairs_table(shift.external_pairs))
    if len(shift.subgroups):
        tables["subgroups"] = ("Subgroups", subgroups_table(shift.subgroups, shift.subgroup_gaps, shown_metrics(metric),
                                                            shift.subgroup_notes))
    return tables


def _tables(index: RunIndex, summary: Summary, runs_dir: Path, shift: ShiftSummary,
            metric: str) -> dict[str, tuple[str, Table]]:
    """Every table of the report by file name, with its section title, in the page's order."""
    agg = summary.setups
    tables = {"main_table": ("Main results", main_table(agg))}
    if len(summary.patients):
        tables["patient_table"] = ("Patient-level results", patient_table(summary.patients))
    tables |= {"more_metrics": ("More metrics", more_table(agg)),
               "per_class": ("Per-class recall", per_class_table(summary.per_class)),
               "pairwise": ("Pairwise comparisons", pairwise_table(summary.pairs))}
    tables |= _shift_tables(shift, metric) | {"cost": ("Cost per run", cost_table(index.runs))}
    if "duplicates_exact" in index.runs and index.runs["duplicates_exact"].notna().any():
        tables["duplicates"] = ("Duplicates across splits", duplicates_table(index.runs))
    tables["provenance"] = (PROVENANCE, provenance_table(index.runs, runs_dir))
    return tables


def _write(index: RunIndex, runs_dir: Path, folder: Path, metric: str) -> None:
    summary = summarise(index)
    agg = summary.setups
    if agg.empty:  # every finished run waits for a fold still missing, or was left out for another reason
        reasons = "; ".join(sorted(set(summary.excluded["reason"])))
        raise UserError(str(runs_dir), f"holds no complete setup ({reasons})",
                        "finish the missing runs (`medtransfer run STUDY.yaml --resume`), then report again")
    shift = summarise_shift(index, summary, metric)
    tables = _tables(index, summary, runs_dir, shift, metric)
    table_dir = folder / "tables"
    for name, (_, table) in tables.items():
        write_table(table, table_dir, name)
    write_standalone(tables["main_table"][1], table_dir, "main_table")
    write_compact(agg, table_dir)
    agg.to_csv(table_dir / "aggregate.csv", index=False)  # every metric, not only the paper's five
    index.runs.to_csv(table_dir / "runs.csv", index=False)
    skipped = pd.concat([index.skipped, summary.excluded], ignore_index=True) if len(summary.excluded) else index.skipped
    skipped.to_csv(table_dir / "skipped_runs.csv", index=False)
    # A task whose every setup was left out (listed under "Runs not included") has no figures.
    runs = index.runs[index.runs["task"].isin(agg["task"])]
    # One colour per setup for the whole report, fixed from every setup in the tables' order.
    style = SetupStyle.of(list(index.runs["setup"]))
    figures = write_figures(runs, summary, folder / "figures", style, metric, shift)
    tasks = sorted(agg["task"].unique())
    parts = ReportParts(runs_dir, len(index.runs), tasks, dict(tables.values()), figures, skipped,
                        collapsed={PROVENANCE})
    write_html(parts, folder / "report.html")


def _swap_in(staging: Path, final: Path) -> None:
    """Put the finished staging folder in place of `final`; an old report is moved aside first, then deleted."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def build_report(runs_dir: Path, metric: str = "auroc") -> Path:
    """Collect the runs under `runs_dir` and write RUNS_DIR/report (tables/, figures/, report.html); returns it."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(str(runs_dir), "is not a folder", "pass the folder that holds your run directories")
    index = collect_runs(runs_dir)
    if not len(index.runs):
        raise UserError(str(runs_dir), "holds no finished runs", "run `medtransfer run STUDY.yaml` or `medtransfer train` first")
    if metric not in index.metrics:
        raise UserError(f"--metric {metric}", "is not a metric of these runs", f"use one of {', '.join(index.metrics)}")
    # Built beside the final folder (same file system) so the last step is a rename, never a half-written report.
    staging = runs_dir / f".{REPORT_DIR}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        _write(index, runs_dir, staging, metric)
        _swap_in(staging, runs_dir / REPORT_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return runs_dir / REPORT_DIR
