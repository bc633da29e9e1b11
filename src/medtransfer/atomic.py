"""Atomic writes: a temporary file beside the target, then one rename, so a reader sees the old file or the new one
and a crash never leaves a half-written file under the real name."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def temp_path(path: Path) -> Path:
    """A fresh `.<name>.<token>.<pid>.tmp` beside `path`: the same folder (so the rename is atomic), hidden, and
    named as the stale clean-up of a killed process (leftovers.remove_stale_staging) recognises it."""
    path = Path(path)
    # The token keeps two writers of one process (threads) apart; the PID comes last for trailing_pid.
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on a clean exit it replaces `path` in one rename, on an error it is
    deleted and `path` is left as it was."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # already gone after the rename


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def commit_dir(staging: Path, target: Path) -> bool:
    """Rename a finished staging folder to `target` in one step; False (and nothing moved) when `target` is taken.

    The rename replaces only a missing target or an empty folder: a file or a folder with anything in it is never
    overwritten, so a concurrent writer's result or a user's files survive.
    """
    try:
        os.rename(staging, target)
    except OSError:
        return False
    return True
