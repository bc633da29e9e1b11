"""Atomic writes: the target holds the old content or the new, never a part; nothing is left beside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medtransfer.atomic import atomic_path, atomic_write_text, commit_dir, temp_path
from medtransfer.leftovers import remove_stale_staging, trailing_pid


def test_write_replaces_in_one_step_and_leaves_nothing_beside(tmp_path: Path) -> None:
    target = tmp_path / "grid.csv"
    target.write_text("old")
    atomic_write_text(target, "new ü")
    assert target.read_text(encoding="utf-8") == "new ü"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.csv"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "study.yaml"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["study.yaml"]


def test_temp_files_are_hidden_unique_and_known_to_the_stale_clean_up(tmp_path: Path) -> None:
    first, second = temp_path(tmp_path / "a.csv"), temp_path(tmp_path / "a.csv")
    assert first != second and first.parent == tmp_path and first.name.startswith(".a.csv.")
    assert trailing_pid(first.name.removesuffix(".tmp"), ".") == os.getpid()
    first.write_text("ours, in progress")
    assert remove_stale_staging(tmp_path) == [] and first.exists()  # a live writer's file is kept


def test_commit_dir_never_replaces_what_is_there(tmp_path: Path) -> None:
    staging, target = tmp_path / ".staging", tmp_path / "run"
    staging.mkdir()
    (staging / "a").write_text("run")
    target.mkdir()
    (target / "thesis.txt").write_text("not ours")
    assert not commit_dir(staging, target)
    assert (staging / "a").is_file() and [p.name for p in target.iterdir()] == ["thesis.txt"]
    (target / "thesis.txt").unlink()
    assert commit_dir(staging, target)  # an empty folder is replaced
    assert (target / "a").read_text() == "run" and not staging.exists()
