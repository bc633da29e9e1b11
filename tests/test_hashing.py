"""Content fingerprints: files are identified by their bytes, and each digest is remembered until the file changes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import xxhash

from medtransfer import hashing
from medtransfer.hashing import digest_memo, file_digest, files_fingerprint, hash_file


@pytest.fixture
def reads(monkeypatch) -> list[Path]:
    """Every file the fingerprint reads, in a fresh process's state (nothing remembered in memory)."""
    monkeypatch.setattr(hashing, "_local", {})
    seen: list[Path] = []
    real = hashing.hash_file

    def counting(path: Path) -> str:
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(hashing, "hash_file", counting)
    return seen


def _files(root: Path, contents: dict[str, bytes]) -> list[Path]:
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return sorted(root / name for name in contents)


def _settled(monkeypatch) -> None:
    """Let files written a moment ago count as settled (the racy window is normally 2 s)."""
    monkeypatch.setattr(hashing, "RACY_SECONDS", 0.02)
    time.sleep(0.1)


def test_swapping_two_files_and_restoring_their_times_changes_the_fingerprint(tmp_path):
    # Same sizes, names and (restored) times: the old path/size/mtime fingerprint could not see this swap.
    paths = _files(tmp_path, {"a/x.png": b"A" * 500, "b/x.png": b"B" * 500})
    before = files_fingerprint(paths, tmp_path)
    times = {p: p.stat().st_mtime_ns for p in paths}
    old_style = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in paths}
    a, b = (p.read_bytes() for p in paths)
    paths[0].write_bytes(b)
    paths[1].write_bytes(a)
    for p in paths:
        os.utime(p, ns=(times[p], times[p]))  # touch -r
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in paths} == old_style
    assert files_fingerprint(paths, tmp_path) != before


def test_the_fingerprint_follows_bytes_and_names_not_times(tmp_path):
    paths = _files(tmp_path, {"a/1.png": b"one", "b/2.png": b"two"})
    before = files_fingerprint(paths, tmp_path)
    os.utime(paths[0], (1, 1))  # touched, same bytes: still the same data
    assert files_fingerprint(paths, tmp_path) == before
    moved = _files(tmp_path / "other", {"a/1.png": b"one", "b/2.png": b"two"})
    assert files_fingerprint(moved, tmp_path / "other") == before  # relative names: a copied tree matches
    renamed = _files(tmp_path / "renamed", {"a/1.png": b"one", "c/2.png": b"two"})
    assert files_fingerprint(renamed, tmp_path / "renamed") != before  # a file moved to another class


def test_a_second_fingerprint_reads_no_file_and_a_rewritten_one_is_read_again(tmp_path, reads, monkeypatch):
    paths = _files(tmp_path / "data", {f"c{k % 2}/{k}.png": bytes([k]) * 300 for k in range(6)})
    _settled(monkeypatch)
    with digest_memo(tmp_path / "cache"):
        first = files_fingerprint(paths, tmp_path / "data")
        assert sorted(reads) == paths
        reads.clear()
        hashing._local.clear()  # as a new process would start: only the store remembers
        assert files_fingerprint(paths, tmp_path / "data") == first
        assert reads == []
        times = paths[2].stat().st_mtime_ns
        paths[2].write_bytes(b"\xff" * 300)  # same size, same mtime after touch -r: only ctime tells
        os.utime(paths[2], ns=(times, times))
        assert files_fingerprint(paths, tmp_path / "data") != first
        assert reads == [paths[2]]
    assert (tmp_path / "cache" / hashing.MEMO_FILE).is_file()


def test_a_file_written_just_now_is_not_remembered(tmp_path, reads):
    # Its times could still stay the same through another write within the file system's timestamp granularity.
    paths = _files(tmp_path, {"a.png": b"x" * 10})
    with digest_memo(tmp_path / "cache"):
        files_fingerprint(paths, tmp_path)
        files_fingerprint(paths, tmp_path)
    assert reads == paths * 2


def test_without_a_cache_root_nothing_is_written(tmp_path, reads, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    paths = _files(tmp_path / "data", {"a.png": b"x"})
    _settled(monkeypatch)
    files_fingerprint(paths, tmp_path / "data")
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()
    reads.clear()
    files_fingerprint(paths, tmp_path / "data")
    assert reads == []  # still remembered within the process


def test_a_damaged_store_costs_reads_not_the_run(tmp_path, monkeypatch):
    paths = _files(tmp_path / "data", {"a.png": b"a", "b.png": b"b"})
    expected = files_fingerprint(paths, tmp_path / "data")
    monkeypatch.setattr(hashing, "_local", {})
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / hashing.MEMO_FILE).write_bytes(b"not a database" * 100)
    with digest_memo(tmp_path / "cache"):
        assert files_fingerprint(paths, tmp_path / "data") == expected


def test_large_files_are_hashed_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "CHUNK", 1024)  # take the memory-mapped path with a small file
    data = os.urandom(10_000)
    (tmp_path / "big.bin").write_bytes(data)
    (tmp_path / "small.bin").write_bytes(data[:100])
    assert hash_file(tmp_path / "big.bin") == xxhash.xxh3_128(data).hexdigest()
    assert hash_file(tmp_path / "small.bin") == xxhash.xxh3_128(data[:100]).hexdigest()
    assert file_digest(tmp_path / "big.bin") == hash_file(tmp_path / "big.bin")


def test_a_file_that_cannot_be_mapped_is_streamed(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "CHUNK", 1024)

    def refuse(*args, **kwargs):
        raise OSError("mmap not supported")

    monkeypatch.setattr(hashing.mmap, "mmap", refuse)
    data = os.urandom(5000)
    (tmp_path / "big.bin").write_bytes(data)
    assert hash_file(tmp_path / "big.bin") == xxhash.xxh3_128(data).hexdigest()
