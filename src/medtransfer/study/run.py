"""`medtransfer run STUDY.yaml`: expand the grid, skip finished runs, execute the rest, then build the report."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml
from pydantic import ValidationError
from rich.table import Table

from medtransfer.atomic import atomic_path, atomic_write_text
from medtransfer.errors import UserError
from medtransfer.progress import Reporter, make_console
from medtransfer.rundir import is_complete, remove_stale_leftovers
from medtransfer.study.executors import check_executor, execute
from medtransfer.study.grid import RunSpec, expand
from medtransfer.study.preflight import preflight
from medtransfer.study.schema import Study, load_study, read_yaml

if TYPE_CHECKING:  # the cost module imports torch; a dry run loads it only when asked
    from medtransfer.study.cost import Estimate, Plan


@dataclass
class StudyOutcome:
    """What a study run did."""

    out: Path
    specs: list[RunSpec]
    skipped: int
    ran: int
    report: Path | None
    plan: Plan | None = None  # a dry run's estimates


def print_plan(specs: list[RunSpec], done: set[str], counts: dict[str, dict[str, int]], reporter: Reporter) -> Plan:
    """The grid with each run's status and its time measured on this machine (low–high), and the total remaining,
    on stdout (a result); the calibration's progress line goes to the reporter."""
    from medtransfer.study.cost import estimate_study, method_note

    reporter.log(f"dry run: timing each distinct backbone of {len(specs) - len(done)} run(s) on this machine "
                 "(random weights)")
    plan = estimate_study(specs, done, counts)
    calibration = plan.calibration
    table = Table(title=f"{len(specs)} runs ({len(done)} finished); time measured on this machine "
                        f"({calibration.machine}) in {calibration.seconds:.0f} s", caption=method_note())
    for column in ("run", "status", "images: train steps / forward only", "est. time"):
        table.add_column(column, no_wrap=True)
    for spec in specs:
        work = plan.works[spec.run_id]
        head = " + kNN fit" if spec.config.head == "knn" else f" + {work.head_epochs} head epochs"  # kNN: no epochs
        passes = f"{work.train:,} / {work.infer:,}" + (head if work.head_epochs else "")
        estimate = plan.estimates.get(spec.run_id)
        table.add_row(spec.label, "to run" if estimate else "done", passes, _range(estimate) if estimate else "-")
    console = make_console()
    console.print(table)
    console.print(f"remaining: {len(plan.estimates)} run(s), {_range(plan.total)} on this machine",
                  markup=False, highlight=False)
    return plan


def _range(estimate: Estimate) -> str:
    return f"{_duration(estimate.low)}–{_duration(estimate.high)}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


STUDY_FILE = "study.yaml"


def _stored_study(stored: Path) -> Study | dict | None:
    """The study a folder holds (validated, else its raw data), or None when unreadable."""
    try:
        raw = read_yaml(stored)
    except UserError:
        return None
    if not isinstance(raw, dict):
        return None
    try:
        return Study(**raw)
    except (ValidationError, TypeError):  # written by another version, or edited since: compare what is there
        return raw


def check_same_study(study: Study, path: Path | None, out: Path) -> str | None:
    """None when `out` holds no study or this one; else what differs (another name, or other settings).
    `path` is the study's file, None for a Study built in Python."""
    stored_path = out / STUDY_FILE
    if not stored_path.is_file() or (path is not None and path.resolve() == stored_path.resolve()):
        return None
    stored = _stored_study(stored_path)
    if stored is None:
        return f"an unreadable {STUDY_FILE}"
    if isinstance(stored, dict):
        name = stored.get("name", "study")
        return f"another study ('{name}')" if name != study.name else f"study '{name}' with other settings"
    if stored.name != study.name:
        return f"another study ('{stored.name}')"
    old, new = stored.model_dump(mode="json"), study.model_dump(mode="json")
    changed = [key for key in new if old.get(key) != new.get(key)]
    if changed:
        return f"study '{study.name}' with other settings ({', '.join(changed)} differ)"
    return None


def _store_study(study: Study, path: Path | None, out: Path, replace: bool, reporter: Reporter) -> None:
    """Copy the study file into its folder (a Study built in Python: its YAML); an older, different one is kept
    beside it when replacing."""
    stored = out / STUDY_FILE
    if path is not None and stored.is_file() and path.resolve() == stored.resolve():
        return
    if replace and stored.is_file():
        aside = stored.with_name(f"study.replaced-{time.strftime('%Y%m%d-%H%M%S')}.yaml")
        stored.rename(aside)
        reporter.log(f"--replace-study: the previous {STUDY_FILE} is kept as {aside}")
    if path is None:  # what was set, as a study file would say it: it reads back as the same Study
        atomic_write_text(stored, yaml.safe_dump(study.model_dump(mode="json", exclude_unset=True), sort_keys=False))
        return
    with atomic_path(stored) as tmp:
        shutil.copyfile(path, tmp)


def run_study(study: Study | Path | str, out: Path | str | None = None, resume: bool = False, executor: str = "local",
              address: str | None = None, dry_run: bool = False, reporter: Reporter | None = None,
              replace_study: bool = False) -> StudyOutcome:
    """Run (or resume) every run of a study, a YAML file or a Study built in Python, then write the report."""
    reporter = reporter or Reporter(quiet=True)
    path = None if isinstance(study, Study) else Path(study)
    study = load_study(path) if path is not None else study
    check_executor(executor)
    out = Path(out) if out else Path("runs") / study.name
    other = check_same_study(study, path, out)
    if other and not replace_study:
        # Going ahead would replace study.yaml, and the report would then treat the first study's runs as stale.
        raise UserError(str(out), f"holds {other} in {out / STUDY_FILE}, not {path or 'study ' + repr(study.name)}",
                        "choose another --out, or pass --replace-study to run this study here (the stored "
                        "study.yaml is kept beside, renamed)")
    specs = expand(study, out)
    done = {s.run_id for s in specs if is_complete(Path(s.config.out))}
    if done and not resume and not dry_run:
        raise UserError(str(out), f"already holds {len(done)} finished run(s) of this study",
                        "pass --resume to continue it, or choose another --out")
    counts = preflight(specs)
    if dry_run:
        return StudyOutcome(out, specs, len(done), 0, None, print_plan(specs, done, counts, reporter))
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    _clean(runs_dir)
    _store_study(study, path, out, replace_study, reporter)
    pending = [s for s in specs if s.run_id not in done]
    reporter.log(f"{study.name}: {len(specs)} runs, {len(done)} already finished, {len(pending)} to run")
    _write_grid(out, specs)
    execute(executor, pending, reporter, lambda _: _write_grid(out, specs), study.resources, address)
    _clean(runs_dir)  # a retried Ray task leaves its dead attempt's staging folder
    report = _report(out, reporter)
    return StudyOutcome(out, specs, len(done), len(pending), report)


def _clean(runs_dir: Path) -> None:
    """Delete staging folders and lock files of runs killed mid-way (their DONE was never written)."""
    remove_stale_leftovers(runs_dir)  # by PID and age; lock files only when no live process holds them


def _write_grid(out: Path, specs: list[RunSpec]) -> None:
    """grid.csv: every run of the study with its id, directory and status (rewritten as runs finish)."""
    frame = pd.DataFrame([{"run_id": s.run_id, "label": s.label, "run_dir": s.config.out,
                           "status": "done" if is_complete(Path(s.config.out)) else "pending"} for s in specs])
    with atomic_path(out / "grid.csv") as tmp:
        frame.to_csv(tmp, index=False)


def _report(out: Path, reporter: Reporter) -> Path | None:
    """Build the report over the study's runs."""
    from medtransfer.report.build import build_report

    report = build_report(out)
    reporter.log(f"report: {report}")
    return report
