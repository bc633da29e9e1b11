"""Run directories appear whole (DONE last) or not at all, and never at the cost of anything the tool did not write."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from filelock import FileLock

from medtransfer.errors import UserError
from medtransfer.rundir import (CONFIG_FILE, DONE, RunWriter, fresh_run_dir, is_complete, lock_path,
                                remove_stale_leftovers)


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_commit_writes_done_last_and_moves_into_place(tmp_path):
    out = tmp_path / "run"
    with RunWriter(out) as writer:
        writer.write_config({"a": 1})
        assert not out.exists() and writer.staging.is_dir()
        assert lock_path(out).is_file()
        writer.commit()
    assert is_complete(out) and (out / CONFIG_FILE).read_text() == "a: 1\n"
    assert not writer.staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no lock file left behind


def test_failure_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), RunWriter(out) as writer:
        writer.text("config.yaml", "x: 1")
        raise RuntimeError("crash mid-run")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_folder_with_the_users_files_is_refused_and_untouched(tmp_path):
    out = tmp_path / "S"
    out.mkdir()
    (out / "thesis.txt").write_text("three years of work")
    with pytest.raises(UserError, match="already holds files") as err:
        RunWriter(out)
    assert "nothing in it was touched" in err.value.line()
    assert [p.name for p in out.iterdir()] == ["thesis.txt"]
    assert (out / "thesis.txt").read_text() == "three years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S"]  # no staging, no lock


def test_an_empty_folder_becomes_the_run(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    with RunWriter(out) as writer:
        writer.text("a.txt", "ok")
        assert writer.commit() == out
    assert sorted(p.name for p in out.iterdir()) == [DONE, "a.txt"]
    with pytest.raises(UserError, match="finished run"):
        RunWriter(out)


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path):
    out = tmp_path / "results.csv"
    out.write_text("a,b\n")
    with pytest.raises(UserError, match="is a file"):
        RunWriter(out)
    assert out.read_text() == "a,b\n"
    with pytest.raises(UserError, match="is a file"):
        RunWriter(out / "run")  # a file where a parent folder should be


def test_out_dot_is_refused_and_the_working_folder_kept(tmp_path, monkeypatch):
    (tmp_path / "notes.md").write_text("keep")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError):
        RunWriter(os.curdir)
    (tmp_path / "notes.md").unlink()
    with pytest.raises(UserError, match="working folder"):
        RunWriter(os.curdir)  # even when empty: renaming over the working folder is never wanted
    assert list(tmp_path.iterdir()) == []


def test_unwritable_parent_is_named(tmp_path, monkeypatch):
    locked = tmp_path / "readonly"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == str(locked) else real_access(p, mode))
    with pytest.raises(UserError, match="not writable") as err:
        RunWriter(locked / "deeper" / "run")
    assert str(locked) in err.value.line()
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_parent_is_a_user_error(tmp_path):
    locked = tmp_path / "readonly"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match="readonly"):
            RunWriter(locked / "run")
    finally:
        locked.chmod(0o700)


def test_a_second_writer_of_the_same_out_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "run"
    with RunWriter(out) as first:
        with pytest.raises(UserError, match=f"process {os.getpid()}") as err:
            RunWriter(out)
        assert "another --out" in err.value.line()
        first.text("a.txt", "first")
        first.commit()
    assert (out / "a.txt").read_text() == "first"


def test_a_lock_held_by_another_process_refuses(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1], timeout=0); "
        "lock.acquire(); open(sys.argv[1], 'w').write(str(os.getpid())); print('held', flush=True); "
        "time.sleep(60)"), str(lock_path(out))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"process {holder.pid}"):
            RunWriter(out)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    with RunWriter(out) as writer:  # its holder is gone: the lock (and its file) is free again
        writer.commit()
    assert is_complete(out)


def test_something_appearing_at_out_meanwhile_is_kept_and_so_is_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    with RunWriter(out) as writer:
        writer.text("metrics.json", "{}")
        out.mkdir()
        (out / "thesis.txt").write_text("not ours")
        moved = writer.commit()
    assert moved == tmp_path / "run-2" and is_complete(moved) and (moved / "metrics.json").is_file()
    assert [p.name for p in out.iterdir()] == ["thesis.txt"]
    assert str(moved) in capsys.readouterr().err


def test_stale_staging_and_lock_files_of_dead_processes_are_removed(tmp_path):
    gone = dead_pid()
    stale = tmp_path / f".old.partial-{gone}"
    stale.mkdir()
    (stale / "metrics.json").write_text("{}")
    live = tmp_path / f".busy.partial-{os.getppid()}"
    live.mkdir()
    stale_lock = tmp_path / ".old.medtransfer.lock"
    stale_lock.write_text(f"{gone}\n")
    old = tmp_path / ".ancient.partial-1"  # PID 1 is alive, but a week-old staging folder is stale anyway
    old.mkdir()
    week = time.time() - 8 * 24 * 3600
    os.utime(old, (week, week))
    user_file = tmp_path / ".notes.partial-12"  # a file, not a staging folder: never ours
    user_file.write_text("x")
    held = tmp_path / ".held.medtransfer.lock"
    lock = FileLock(held, timeout=0)
    lock.acquire()
    held.write_text(f"{gone}\n")  # a dead PID in it, but held: a live writer whose PID write is pending
    try:
        removed = remove_stale_leftovers(tmp_path)
    finally:
        lock.release()
    assert sorted(p.name for p in removed) == sorted([stale.name, stale_lock.name, old.name])
    assert live.is_dir() and user_file.is_file() and held.is_file()
    assert not stale.exists() and not stale_lock.exists() and not old.exists()


def test_a_run_cleans_its_parent_of_dead_leftovers(tmp_path):
    stale = tmp_path / f".run.partial-{dead_pid()}"
    stale.mkdir()
    with RunWriter(tmp_path / "run") as writer:
        assert not stale.exists()
        writer.commit()


def test_fresh_run_dir_never_reuses(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a-2").mkdir()
    assert fresh_run_dir(tmp_path, "a").name == "a-3"
    assert fresh_run_dir(tmp_path, "b").name == "b"
