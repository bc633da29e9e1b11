"""Where each run came from (its environment.json): versions, git commit, device, threads, seed and command line."""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd

from medtransfer.errors import UserError
from medtransfer.report.render import DASH, Table
from medtransfer.rundir import ENVIRONMENT_FILE, RunDir

NOT_RECORDED = "not recorded"
PACKAGES = ("torch", "timm")  # the families whose versions change results most; the CSV keeps every package
HEADER = ["Task", "Run folder", "medtransfer", "torch", "timm", "Device", "Git commit", "Threads", "Seed", "Command"]


def _environment(run_dir: Path) -> tuple[dict | None, str]:
    """The run's record, or None with why: an old run never wrote one; a damaged one is shown as such."""
    try:
        record = RunDir(run_dir).environment()
    except UserError as exc:
        return None, f"unreadable ({exc.problem})"
    return record, NOT_RECORDED


def _text(value: object) -> str:
    return DASH if value is None or value == "" else str(value)


def _git(record: dict) -> str:
    git = record.get("git")
    if not isinstance(git, dict) or not git.get("commit"):
        return DASH
    return str(git["commit"])[:10] + (" (dirty)" if git.get("dirty") else "")


def _package(record: dict, name: str) -> str:
    packages = record.get("packages") or {}
    if name not in packages:
        return DASH
    return "not installed" if packages[name] is None else str(packages[name])


def _command(record: dict) -> str:
    command = record.get("command")
    if isinstance(command, list):
        return shlex.join(str(part) for part in command)
    return _text(command)


def _cells(record: dict) -> list[str]:
    return [_text(record.get("medtransfer")), *(_package(record, name) for name in PACKAGES),
            _text(record.get("device")), _git(record), _text(record.get("threads")), _text(record.get("seed")),
            _command(record)]


def provenance_table(runs: pd.DataFrame, root: Path) -> Table:
    """One row per finished run: the versions, device, commit, threads, seed and command its environment.json holds,
    `not recorded` for runs written before it existed."""
    rows, raw = [], []
    for _, run in runs.iterrows():
        run_dir = Path(run["run_dir"])
        record, missing = _environment(run_dir)
        name = str(run_dir.relative_to(root)) if run_dir.is_relative_to(root) else run_dir.name
        cells = _cells(record) if record is not None else [missing] + [DASH] * (len(HEADER) - 3)
        rows.append([run["task"], name, *cells])
        raw.append({"task": run["task"], "setup": run["setup"], "run_dir": str(run_dir),
                    **dict(zip([h.lower().replace(" ", "_") for h in HEADER[2:]], cells)),
                    **{f"package_{k}": v for k, v in ((record or {}).get("packages") or {}).items()},
                    "python": (record or {}).get("python"), "platform": (record or {}).get("platform"),
                    "started": (record or {}).get("started")})
    caption = (f"Provenance per run, from each run's {ENVIRONMENT_FILE} ({NOT_RECORDED}: a run written before "
               f"it was recorded). Git commit: the working tree's commit, `(dirty)` with uncommitted changes. The CSV "
               "also has Python, the platform, the start time and every optional package's version.")
    starts = [i for i in range(len(rows)) if i == 0 or rows[i][0] != rows[i - 1][0]]
    return Table(HEADER, rows, caption, pd.DataFrame(raw), [], starts, repeat_first=False)
