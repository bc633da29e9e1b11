"""Staging folders and temporary files left by a killed process: found by the PID in their name, and by age."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

# A PID can be reused by an unrelated process after a reboot or a long uptime; staging older than this is stale
# whoever holds its PID now, since no run or cache write of ours spends a week between two writes.
MAX_AGE_SECONDS = 7 * 24 * 3600


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (one of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # another user's process; an absurd number is no process at all
    return True


def is_stale(path: Path, pid: int | None, max_age: float = MAX_AGE_SECONDS) -> bool:
    """A leftover is stale when its writer's process is gone, or it is older than `max_age` whatever its PID."""
    if pid is None or pid == os.getpid():
        return False  # not ours to judge, or our own work in progress
    try:
        age = time.time() - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return not pid_alive(pid) or age > max_age


def remove_stale(candidates: Iterable[tuple[Path, int | None]]) -> list[Path]:
    """Delete each stale (path, pid) leftover, folder or file; returns what was removed."""
    removed = []
    for path, pid in candidates:
        if not is_stale(path, pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def trailing_pid(text: str, separator: str = "-") -> int | None:
    """The PID after the last separator of a name such as `.run.partial-4242`, or None."""
    tail = text.rsplit(separator, 1)[-1]
    return int(tail) if tail.isdigit() else None


def remove_stale_staging(folder: Path) -> list[Path]:
    """Delete the `.<name>.<pid>.tmp` staging that a dead process (or one over a week ago) left in a cache folder."""
    if not folder.is_dir():
        return []
    return remove_stale((p, trailing_pid(p.name.removesuffix(".tmp"), ".")) for p in folder.glob(".*.tmp"))
