"""Content hashes used to name caches and to identify data and weight files.

A data source is identified by the bytes of its files, never by their names and times alone: swapping two
classes' files and restoring their times with `touch -r` must change the identity. Reading every file on every run
would cost as much as decoding it, so each file's digest is remembered by what changes whenever its bytes can have
changed — path, device, inode, size, mtime and ctime (ctime cannot be set from user space, so `touch -r` and
in-place rewrites are seen) — in a small SQLite file under the cache root, shared safely by concurrent runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from itertools import chain
from pathlib import Path

import xxhash

MEMO_FILE = "file-digests.sqlite"
READ_THREADS = 8  # reads of many small files overlap well even on one disk; on network storage more so
CHUNK = 1 << 22
# A file changed within the timestamp granularity of its file system (1-2 s on some) after we read it could keep
# the same times: such a digest is used for this fingerprint but not remembered (git's "racy" rule).
RACY_SECONDS = 2.0

_memo_dir: ContextVar[Path | None] = ContextVar("medtransfer_digest_memo", default=None)
_local: dict[tuple, str] = {}  # the same memo within one process, for sources read before a cache root is known

Signature = tuple[str, int, int, int, int, int]  # absolute path, device, inode, size, mtime_ns, ctime_ns


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_file(path: Path) -> str:
    """xxh3-128 of a file's bytes: a small file in one read, a large one through a read-only memory map."""
    with open(path, "rb", buffering=0) as handle:
        if os.fstat(handle.fileno()).st_size <= CHUNK:
            return xxhash.xxh3_128(handle.read()).hexdigest()
        # Hashing the mapped pages skips the copy into a user buffer: ~5-10 GB/s from the page cache instead of ~1.
        try:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return xxhash.xxh3_128(mapped).hexdigest()
        except (OSError, ValueError):  # a file system that cannot map files (some FUSE mounts): stream it
            digest = xxhash.xxh3_128()
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
            return digest.hexdigest()


def json_digest(value: object, length: int = 24) -> str:
    """Short sha256 of a JSON-able value with sorted keys: the same settings give the same name anywhere."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


@contextlib.contextmanager
def digest_memo(folder: Path) -> Iterator[None]:
    """Within this block, file digests are remembered across processes in FOLDER/file-digests.sqlite."""
    token = _memo_dir.set(Path(folder))
    try:
        yield
    finally:
        _memo_dir.reset(token)


def file_signature(path: Path) -> Signature:
    """What changes whenever a file's bytes may have changed: absolute path, device, inode, size, mtime, ctime."""
    st = os.stat(path)
    return (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Store:
    """The persistent memo: one row per absolute path; a row counts only while its whole signature matches."""

    def __init__(self, folder: Path | None) -> None:
        self.db = Path(folder) / MEMO_FILE if folder else None

    def _open(self) -> sqlite3.Connection | None:
        # The memo only saves reading time: an unwritable, locked-out or damaged store is no reason to fail a run.
        if self.db is None:
            return None
        con = None
        try:
            self.db.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.db, timeout=30)
            con.execute("PRAGMA journal_mode=WAL")  # concurrent runs read while one writes
            con.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, dev INT, ino INT, size INT, "
                        "mtime_ns INT, ctime_ns INT, digest TEXT)")
            return con
        except (OSError, sqlite3.Error):
            if con is not None:
                con.close()
            return None

    def get(self, signatures: list[Signature]) -> dict[Signature, str]:
        """The remembered digests of those signatures that match a stored row exactly."""
        found: dict[Signature, str] = {}
        con = self._open()
        if con is None:
            return found
        wanted = {s[0]: s for s in signatures}
        paths = list(wanted)
        try:
            for start in range(0, len(paths), 500):  # within SQLite's bound on query parameters
                part = paths[start:start + 500]
                rows = con.execute(f"SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest FROM files WHERE path "
                                   f"IN ({','.join('?' * len(part))})", part)
                for *sig, digest in rows:
                    if tuple(sig) == wanted[sig[0]]:
                        found[wanted[sig[0]]] = digest
        except sqlite3.Error:
            pass
        finally:
            con.close()
        return found

    def put(self, digests: dict[Signature, str]) -> None:
        """Remember digests (replacing older rows of the same paths)."""
        con = self._open() if digests else None
        if con is None:
            return
        try:
            with con:  # one transaction
                con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [(*sig, digest) for sig, digest in digests.items()])
        except sqlite3.Error:
            pass
        finally:
            con.close()


def _read(signature: Signature) -> tuple[str, bool]:
    """The file's digest, and whether it may be remembered (unchanged while read, and not racily new)."""
    start = time.time()
    digest = hash_file(Path(signature[0]))
    settled = file_signature(Path(signature[0])) == signature and start - signature[5] / 1e9 > RACY_SECONDS
    return digest, settled


def file_digests(paths: list[Path]) -> list[str]:
    """Content digest of each file, read only when its signature is not remembered; misses are read in threads."""
    signatures = [file_signature(p) for p in paths]
    known = {s: _local[s] for s in signatures if s in _local}
    store = _Store(_memo_dir.get())
    missing = [s for s in dict.fromkeys(signatures) if s not in known]
    if missing:
        stored = store.get(missing)
        known |= stored
        _local.update(stored)
    todo = [s for s in dict.fromkeys(signatures) if s not in known]
    if todo:
        # One task per thread, not per file: a future per small file costs more than reading it.
        parts = [todo[k::READ_THREADS] for k in range(min(READ_THREADS, len(todo)))]
        with ThreadPoolExecutor(len(parts)) as pool:
            results = dict(chain.from_iterable(pool.map(lambda part: [(s, _read(s)) for s in part], parts)))
        fresh = {s: digest for s, (digest, settled) in results.items() if settled}
        known |= {s: digest for s, (digest, _) in results.items()}
        _local.update(fresh)
        store.put(fresh)
    return [known[s] for s in signatures]


def file_digest(path: Path) -> str:
    """Content digest of one file (xxh3-128), remembered like those of a fingerprint."""
    return file_digests([Path(path)])[0]


def files_fingerprint(paths: list[Path], root: Path) -> str:
    """Content identity of a set of files: each file's name relative to the root and the digest of its bytes."""
    digest = xxhash.xxh3_128(b"content-v1\n")
    for path, content in zip(paths, file_digests(list(paths))):
        digest.update(f"{os.path.relpath(path, root)}\0{content}\n".encode())
    return digest.hexdigest()
