"""ArrayCache: atomic, checksummed memory-mapped entries; the cache root; staging left by dead processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import run_cli

from medtransfer.engine.cache import ArrayCache, cache_root, key_digest
from medtransfer.errors import UserError
from medtransfer.hashing import hash_file


def test_writer_fills_a_memory_map_that_loads_read_only(tmp_path):
    cache = ArrayCache(tmp_path, "images")
    with cache.writer({"a": 1}, (5, 3), np.uint8) as out:
        assert isinstance(out, np.memmap)
        assert cache.load({"a": 1}) is None  # not visible before the writer commits
        out[:] = np.arange(15, dtype=np.uint8).reshape(5, 3)
    loaded = cache.load({"a": 1})
    assert isinstance(loaded, np.memmap) and not loaded.flags.writeable
    assert np.array_equal(loaded, np.arange(15).reshape(5, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [key_digest({"a": 1})]


def test_store_replaces_a_stale_entry(tmp_path):
    cache = ArrayCache(tmp_path, "x")
    cache.store({"a": 1}, np.zeros(3))
    (tmp_path / key_digest({"a": 1}) / "manifest.json").write_text('{"key": {"a": 2}}')
    assert cache.load({"a": 1}) is None
    assert np.array_equal(cache.store({"a": 1}, np.ones(3)), np.ones(3))


def _entry_file(root, key, name):
    return root / key_digest(key) / f"{name}.npy"


def test_each_entry_carries_a_checksum_of_its_array(tmp_path):
    cache = ArrayCache(tmp_path, "x")
    cache.store({"a": 1}, np.arange(1000, dtype=np.float32))
    manifest = json.loads((tmp_path / key_digest({"a": 1}) / "manifest.json").read_text())
    assert manifest["checksum"]["xxh3_128"] == hash_file(_entry_file(tmp_path, {"a": 1}, "x"))
    assert np.array_equal(ArrayCache(tmp_path, "x").load({"a": 1}), np.arange(1000))
    assert cache.problems == []


def test_bytes_overwritten_inside_an_entry_make_it_a_miss_that_is_removed(tmp_path):
    cache = ArrayCache(tmp_path, "features")
    key = {"a": 1}
    cache.store(key, np.ones((200, 256), dtype=np.float16))  # 100 KB
    with open(_entry_file(tmp_path, key, "features"), "r+b") as handle:
        handle.seek(40_000)
        handle.write(b"\x00" * 40_000)  # 40 KB of zeros in the middle, header untouched
    assert cache.load(key) is None
    assert not (tmp_path / key_digest(key)).exists()
    assert len(cache.problems) == 1 and key_digest(key) in cache.problems[0] and "xxh3_128" in cache.problems[0]
    assert np.array_equal(cache.store(key, np.full((200, 256), 2, np.float16)), np.full((200, 256), 2))


def test_an_entry_without_its_array_or_checksum_is_not_used(tmp_path):
    cache = ArrayCache(tmp_path, "x")
    cache.store({"a": 1}, np.zeros(3))
    _entry_file(tmp_path, {"a": 1}, "x").unlink()
    assert cache.load({"a": 1}) is None
    cache.store({"a": 2}, np.zeros(3))
    manifest = tmp_path / key_digest({"a": 2}) / "manifest.json"
    manifest.write_text(json.dumps({"key": {"a": 2}, "shape": [3]}))  # an entry from before checksums
    assert cache.load({"a": 2}) is None and len(cache.problems) == 2


def test_stale_staging_of_dead_processes_is_removed_on_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    digest = key_digest({"old": 1})
    gone = tmp_path / f".{digest}.{dead.pid}.tmp"
    live = tmp_path / f".{digest}.{os.getppid()}.tmp"  # a running writer (our parent process)
    ancient = tmp_path / f".{key_digest({'old': 2})}.{os.getppid()}.tmp"  # a live PID, but a week old
    for folder in (gone, live, ancient):
        folder.mkdir()
        (folder / "x.npy").write_bytes(b"half written")
    week = time.time() - 8 * 24 * 3600
    os.utime(ancient, (week, week))  # whoever holds its PID now, a week-old staging folder is no live write
    ArrayCache(tmp_path, "x").store({"a": 1}, np.zeros(3))
    assert not gone.exists() and live.exists() and not ancient.exists()


def test_cache_root_must_be_a_writable_folder(tmp_path):
    made = cache_root(str(tmp_path / "new" / "cache"))
    assert made.is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        cache_root(str(tmp_path / "file"))
    with pytest.raises(UserError, match="cannot be created"):
        cache_root(str(tmp_path / "file" / "below"))


def test_a_cache_dir_that_is_a_file_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "cachefile").write_text("not a folder")
    out = tmp_path / "run"
    code, _, stderr = run_cli(["train", "synthetic:n=40,size=16", "--backbone", "resnet18", "--weights", "none",
                               "--image-size", "32", "-q", "--cache-dir", str(tmp_path / "cachefile"),
                               "--out", str(out)], monkeypatch, capsys)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "--cache-dir" in lines[0] and "not a folder" in lines[0]
    assert not out.exists() and (tmp_path / "cachefile").read_text() == "not a folder"
