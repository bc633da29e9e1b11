"""Run directories appear whole (DONE last) or not at all."""

from __future__ import annotations

import pytest

from medtransfer.errors import UserError
from medtransfer.rundir import DONE, RunWriter, fresh_run_dir, is_complete


def test_commit_writes_done_last_and_moves_into_place(tmp_path):
    out = tmp_path / "run"
    with RunWriter(out) as writer:
        writer.json("metrics.json", {"a": 1})
        assert not out.exists() and writer.staging.is_dir()
        writer.commit()
    assert is_complete(out) and (out / "metrics.json").is_file()
    assert not writer.staging.exists()


def test_failure_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), RunWriter(out) as writer:
        writer.text("config.yaml", "x: 1")
        raise RuntimeError("crash mid-run")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_incomplete_leftover_is_replaced_but_finished_run_is_kept(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "stale.txt").write_text("from a crashed attempt")
    with RunWriter(out) as writer:
        writer.text("new.txt", "ok")
        writer.commit()
    assert sorted(p.name for p in out.iterdir()) == [DONE, "new.txt"]
    with pytest.raises(UserError):
        RunWriter(out)


def test_fresh_run_dir_never_reuses(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a-2").mkdir()
    assert fresh_run_dir(tmp_path, "a").name == "a-3"
    assert fresh_run_dir(tmp_path, "b").name == "b"
