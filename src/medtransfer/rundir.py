"""Run directories appear whole or not at all: files go to a staging folder, DONE last, then one rename."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import TracebackType

import pandas as pd
import yaml

from medtransfer.errors import UserError

DONE = "DONE"


def is_complete(run_dir: Path) -> bool:
    """A run is finished only when its DONE marker exists."""
    return (Path(run_dir) / DONE).is_file()


def fresh_run_dir(parent: Path, name: str) -> Path:
    """A new folder name under `parent`: name, name-2, name-3, … (never an existing one)."""
    candidate, k = parent / name, 2
    while candidate.exists():
        candidate, k = parent / f"{name}-{k}", k + 1
    return candidate


class RunWriter:
    """Context manager: write into `.<name>.partial-<pid>`; on success write DONE and rename into place."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        if is_complete(self.out):
            raise UserError(str(self.out), "already holds a finished run", "pass another --out, or delete it")
        self.staging = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"

    def __enter__(self) -> RunWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir()
        return self

    def path(self, name: str) -> Path:
        """Where to write a file of the run (inside staging)."""
        return self.staging / name

    def text(self, name: str, text: str) -> None:
        """Write a text file."""
        self.path(name).write_text(text)

    def json(self, name: str, data: dict) -> None:
        """Write JSON (NaN stays NaN: JSON readers in Python accept it)."""
        self.text(name, json.dumps(data, indent=2) + "\n")

    def yaml(self, name: str, data: dict) -> None:
        """Write YAML in key order."""
        self.text(name, yaml.safe_dump(data, sort_keys=False))

    def csv(self, name: str, frame: pd.DataFrame) -> None:
        """Write a CSV without the index."""
        frame.to_csv(self.path(name), index=False)

    def commit(self) -> Path:
        """DONE last, then move the whole folder into place; an incomplete leftover there is replaced."""
        self.text(DONE, "")
        if self.out.exists():
            shutil.rmtree(self.out)  # no DONE (checked in __init__): a crashed attempt, safe to replace
        os.replace(self.staging, self.out)
        return self.out

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
