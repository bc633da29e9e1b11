"""On-disk array caches (decoded images, features): one folder per key, memory-mapped, written atomically.

Every entry's manifest holds a checksum of its array file, verified on load: a damaged entry is removed and
reported, so that it is rebuilt instead of silently feeding wrong numbers into a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from platformdirs import user_cache_dir

from medtransfer.data.table import SampleTable
from medtransfer.errors import UserError
from medtransfer.hashing import Signature, file_signature, hash_file, json_digest
from medtransfer.leftovers import remove_stale_staging

CHECKSUM = "xxh3_128"


def default_cache_root() -> Path:
    """The user cache folder (e.g. ~/.cache/medtransfer): features/, images/ and dicom-volumes/ live under it."""
    return Path(user_cache_dir("medtransfer"))


def cache_root(cache_dir: str | None) -> Path:
    """`--cache-dir` when given, else the user cache folder; created when absent, refused when not a writable folder."""
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_root()
    subject = f"--cache-dir {cache_dir}" if cache_dir else f"cache folder {root}"
    fix = "give a folder that can be written (it is created when absent)" + ("" if cache_dir else " with --cache-dir")
    if root.exists() and not root.is_dir():
        raise UserError(subject, "is a file, not a folder", fix)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(subject, f"cannot be created ({exc.strerror or exc})", fix) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(subject, "is not writable", fix)
    return root


def samples_key(table: SampleTable) -> dict:
    """What identifies the data of a cache entry: the source's fingerprint and the sample order."""
    ids = hashlib.sha256("\n".join(table.frame["sample_id"].astype(str)).encode()).hexdigest()
    return {"data": table.fingerprint, "samples": ids, "n": len(table)}


def key_digest(key: dict) -> str:
    """Stable short name of a cache entry."""
    return json_digest(key)


class ArrayCache:
    """Entries are folders <digest>/{<name>.npy, manifest.json}; a reader never sees a half-written entry, and a
    damaged one (its array's checksum differs from the manifest's) is removed and noted in `problems`."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.filename = Path(root), f"{name}.npy"
        self.problems: list[str] = []
        # The entry this object just committed, with its file's signature and checksum: the load that follows a
        # write (to hand the memory map back) need not re-read gigabytes it has only just hashed. Used once.
        self._fresh: dict[str, tuple[Signature, str]] = {}

    def path(self, key: dict) -> Path:
        """Where the entry's array file is (or will be, once committed)."""
        return self.root / key_digest(key) / self.filename

    def _checksum(self, path: Path) -> str:
        signature, checksum = self._fresh.pop(path.parent.name, (None, ""))
        return checksum if signature == file_signature(path) else hash_file(path)

    def _discard(self, entry: Path, problem: str) -> None:
        self.problems.append(f"cache entry {self.root.name}/{entry.name} {problem}: removed, and rebuilt")
        shutil.rmtree(entry, ignore_errors=True)

    def load(self, key: dict) -> np.ndarray | None:
        """The cached array, memory-mapped read-only, or None when absent, stale (manifest differs) or damaged."""
        entry = self.root / key_digest(key)
        try:
            text = (entry / "manifest.json").read_text()
        except OSError:
            return None
        try:
            manifest = json.loads(text)
        except ValueError:
            self._discard(entry, "has an unreadable manifest")
            return None
        if not isinstance(manifest, dict) or manifest.get("key") != key:
            return None  # another key under this name: the writer replaces it
        expected = (manifest.get("checksum") or {}).get(CHECKSUM)
        try:
            damaged = expected is None or self._checksum(self.path(key)) != expected
            array = None if damaged else np.load(self.path(key), mmap_mode="r")
        except (OSError, ValueError):
            damaged, array = True, None
        if damaged:
            self._discard(entry, f"failed its {CHECKSUM} check ({self.filename} is damaged or missing)")
        return array

    @contextlib.contextmanager
    def _writable(self) -> Iterator[None]:
        """A full disk or a read-only cache folder is the user's to fix: one line, not a traceback."""
        try:
            yield
        except OSError as exc:
            raise UserError(f"cache folder {self.root}", f"cannot be written ({exc.strerror or exc})",
                            "free space there, or choose another folder with --cache-dir") from None

    @contextlib.contextmanager
    def writer(self, key: dict, shape: tuple[int, ...], dtype: np.dtype | type) -> Iterator[np.ndarray]:
        """Yield a writable memory map in a staging folder; on clean exit checksum it and rename it into place.

        Filling a memory map keeps the process's own memory flat however large the data set: the pages
        belong to the file, and the kernel writes them back and drops them as it needs.
        """
        final = self.root / key_digest(key)
        staging = self.root / f".{final.name}.{os.getpid()}.tmp"
        with self._writable():
            self.root.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(self.root)
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
        try:
            with self._writable():
                array = open_memmap(staging / self.filename, mode="w+", dtype=dtype, shape=shape)
            yield array
            with self._writable():
                array.flush()
                del array
                checksum = hash_file(staging / self.filename)
                manifest = {"key": key, "shape": list(shape), "checksum": {CHECKSUM: checksum}}
                (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
            if final.exists() and self.load(key) is None:  # stale or damaged: replace it, never reuse it
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(staging, final)
                self._fresh[final.name] = (file_signature(self.path(key)), checksum)
            except OSError:  # a concurrent worker stored the same entry first: keep theirs
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def store(self, key: dict, array: np.ndarray) -> np.ndarray:
        """Write a whole in-memory array and return the cached memory map."""
        with self.writer(key, array.shape, array.dtype) as out:
            out[:] = array
        return self.load(key)
