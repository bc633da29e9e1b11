"""The write side of a run directory: files go to a staging folder, DONE last, then one rename."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import pandas as pd
import yaml
from filelock import FileLock, Timeout

from medtransfer.atomic import commit_dir
from medtransfer.errors import UserError
from medtransfer.leftovers import is_stale, remove_stale, trailing_pid
from medtransfer.rundir.files import (CONFIG_FILE, DONE, ENVIRONMENT_FILE, HISTORY_FILE, METRICS_FILE, PATIENTS_FILE,
                                      PREDICTIONS_FILE, WeightsKind, weights_file)
from medtransfer.rundir.metrics import RunMetrics
from medtransfer.rundir.reader import is_complete

STAGING_MARK = ".partial-"
LOCK_SUFFIX = ".medtransfer.lock"  # a name no other tool uses: stale clean-up touches only ours


def fresh_run_dir(parent: Path, name: str) -> Path:
    """A new folder name under `parent`: name, name-2, name-3, … (never an existing one)."""
    candidate, k = parent / name, 2
    while candidate.exists() or candidate.is_symlink():
        candidate, k = parent / f"{name}-{k}", k + 1
    return candidate


def lock_path(out: Path) -> Path:
    """The lock file of a run dir: `.<name>.medtransfer.lock` beside it (inside, it would be a file in the user's folder)."""
    target = Path(os.path.abspath(out))
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def lock_holder(path: Path) -> int | None:
    """The PID written into a lock file by its holder, or None."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def remove_stale_leftovers(parent: Path) -> list[Path]:
    """Delete staging folders and lock files in `parent` left by dead processes (by PID and age)."""
    if not parent.is_dir():
        return []
    staging = [(p, trailing_pid(p.name)) for p in parent.glob(f".*{STAGING_MARK}*") if p.is_dir()]
    removed = remove_stale(staging)
    for path in parent.glob(f".*{LOCK_SUFFIX}"):
        if not path.is_file() or not is_stale(path, lock_holder(path)):
            continue
        lock = FileLock(path, timeout=0)
        try:
            lock.acquire()  # held by nobody: a PID reused by a live holder keeps its file
        except (Timeout, OSError):
            continue
        try:
            path.unlink(missing_ok=True)  # unlinked while held: a peer that opened it sees the unlink and retries
            removed.append(path)
        finally:
            lock.release()
    return removed


def _writable_ancestor(path: Path) -> Path:
    """The nearest existing folder above `path` (which mkdir would create the rest under); refused if unwritable."""
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(str(ancestor), "is a file, so no run directory can be created under it",
                        "pass an --out whose parent is a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(str(ancestor), "is not writable (permission denied)",
                        "pass an --out in a folder you can write to")
    return ancestor


def check_out(out: Path) -> None:
    """Refuse an --out that is not a new place for a run: a file, a finished run, or a folder with anything in it."""
    target = Path(os.path.abspath(out))
    if target.is_symlink():
        raise UserError(str(out), "is a symbolic link", "pass a new or empty folder for --out")
    if target.exists() and not target.is_dir():
        raise UserError(str(out), "is a file, not a folder", "pass a new or empty folder for --out")
    if is_complete(target):
        raise UserError(str(out), "already holds a finished run", "pass another --out, or delete it")
    cwd = Path(os.path.abspath(Path.cwd()))
    if target == cwd or target in cwd.parents:
        raise UserError(str(out), "is the working folder (or holds it)", "pass a new folder for --out, e.g. runs/NAME")
    if target.is_dir() and any(target.iterdir()):
        # A run of ours never leaves a folder at `out` before DONE (staging is renamed only after it): these are
        # the user's files. Nothing was deleted.
        raise UserError(str(out), "is a folder that already holds files (and no finished run)",
                        "pass a new or empty folder for --out; nothing in it was touched")


class RunWriter:
    """Context manager: write into `.<name>.partial-<pid>`; on success write DONE and rename into place.

    Construction checks `out`, takes the run dir's lock (held until exit) and creates the staging folder, so a
    bad --out fails before any long work.
    """

    def __init__(self, out: Path, log: Callable[[str], None] | None = None) -> None:
        self.out = Path(out)
        self._target = Path(os.path.abspath(self.out))
        self._log = log or (lambda message: print(message, file=sys.stderr))
        self.staging = self._target.parent / f".{self._target.name}{STAGING_MARK}{os.getpid()}"
        self._lock: FileLock | None = None
        self._keep_staging = False
        check_out(self.out)
        parent = self._target.parent
        _writable_ancestor(parent)
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(str(parent), f"cannot be created ({exc.strerror or exc})",
                            "pass an --out in a folder you can write to") from None
        remove_stale_leftovers(parent)
        self._acquire_lock()
        try:
            check_out(self.out)  # again under the lock: another run may have finished there meanwhile
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging.mkdir()
        except OSError as exc:
            self._release_lock()
            raise UserError(str(parent), f"cannot hold the run's files ({exc.strerror or exc})",
                            "pass an --out in a folder you can write to") from None
        except BaseException:
            self._release_lock()
            raise

    def _acquire_lock(self) -> None:
        path = lock_path(self.out)
        lock = FileLock(path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = lock_holder(path)
            who = f"process {holder}" if holder else "another process"
            raise UserError(str(self.out), f"is being written by {who} right now",
                            "wait for that run to finish, or pass another --out") from None
        except OSError as exc:
            raise UserError(str(path.parent), f"cannot hold a lock file ({exc.strerror or exc})",
                            "pass an --out in a folder you can write to") from None
        self._lock = lock
        try:
            path.write_text(f"{os.getpid()}\n")  # names this process to a second writer, and to stale clean-up
        except OSError:
            pass  # the lock still holds; only the holder's name is missing

    def _release_lock(self) -> None:
        if self._lock is None:
            return
        try:
            lock_path(self.out).unlink(missing_ok=True)  # while held: nobody locks a file that is going away
        except OSError:
            pass
        self._lock.release()
        self._lock = None

    def __enter__(self) -> RunWriter:
        return self

    def path(self, name: str) -> Path:
        """Where to write a file of the run (inside staging)."""
        return self.staging / name

    def text(self, name: str, text: str) -> None:
        """Write a text file of the run."""
        self.path(name).write_text(text)

    def write_config(self, config: dict) -> None:
        """The resolved configuration, as YAML in key order."""
        self.text(CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))

    def write_metrics(self, metrics: RunMetrics) -> None:
        """The metrics record as indented JSON (NaN stays NaN: JSON readers in Python accept it)."""
        self.text(METRICS_FILE, json.dumps(metrics.to_json(), indent=2) + "\n")

    def write_environment(self, environment: dict) -> None:
        """Where the run came from, as indented JSON."""
        self.text(ENVIRONMENT_FILE, json.dumps(environment, indent=2) + "\n")

    def _csv(self, name: str, frame: pd.DataFrame) -> None:
        frame.to_csv(self.path(name), index=False)

    def write_predictions(self, frame: pd.DataFrame) -> None:
        """Per-sample val and test predictions."""
        self._csv(PREDICTIONS_FILE, frame)

    def write_patient_predictions(self, frame: pd.DataFrame) -> None:
        """Per-patient pooled val and test predictions."""
        self._csv(PATIENTS_FILE, frame)

    def write_history(self, frame: pd.DataFrame) -> None:
        """The training record, one row per epoch."""
        self._csv(HISTORY_FILE, frame)

    def weights_path(self, kind: WeightsKind) -> Path:
        """Where to save one kind of trained weights (inside staging)."""
        return self.path(weights_file(kind))

    def commit(self) -> Path:
        """DONE last, then one rename into place; whatever appeared at `out` meanwhile is kept, and so is the run."""
        self.text(DONE, "")
        if commit_dir(self.staging, self._target):  # replaces only an empty folder: never anyone's files
            return self.out
        for _ in range(100):  # another name may be taken between the choice and the rename: choose again
            moved = fresh_run_dir(self._target.parent, self._target.name)
            if not commit_dir(self.staging, moved):
                continue
            self._log(f"warning: {self.out} was taken by something else while the run was written (left as it "
                      f"was); the finished run is in {moved}")
            return moved
        self._keep_staging = True  # the finished run must not be lost with the staging folder
        raise UserError(str(self.out), "could not be written, nor any free name beside it",
                        f"the finished run is kept in {self.staging}")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self.staging.exists() and not self._keep_staging:
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self._release_lock()
