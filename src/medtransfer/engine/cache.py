"""On-disk array caches (decoded images, features): one folder per key, memory-mapped, written atomically."""

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
from medtransfer.hashing import json_digest


def default_cache_root() -> Path:
    """The user cache folder (e.g. ~/.cache/medtransfer): features/, images/ and dicom-volumes/ live under it."""
    return Path(user_cache_dir("medtransfer"))


def cache_root(cache_dir: str | None) -> Path:
    """`--cache-dir` when given, else the user cache folder."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_root()


def samples_key(table: SampleTable) -> dict:
    """What identifies the data of a cache entry: the source's fingerprint and the sample order."""
    ids = hashlib.sha256("\n".join(table.frame["sample_id"].astype(str)).encode()).hexdigest()
    return {"data": table.fingerprint, "samples": ids, "n": len(table)}


def key_digest(key: dict) -> str:
    """Stable short name of a cache entry."""
    return json_digest(key)


class ArrayCache:
    """Entries are folders <digest>/{<name>.npy, manifest.json}; a reader never sees a half-written entry."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.filename = Path(root), f"{name}.npy"

    def path(self, key: dict) -> Path:
        """Where the entry's array file is (or will be, once committed)."""
        return self.root / key_digest(key) / self.filename

    def load(self, key: dict) -> np.ndarray | None:
        """The cached array, memory-mapped read-only, or None when absent or stale (manifest differs)."""
        entry = self.root / key_digest(key)
        try:
            manifest = json.loads((entry / "manifest.json").read_text())
            if manifest.get("key") != key:
                return None
            return np.load(self.path(key), mmap_mode="r")
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def writer(self, key: dict, shape: tuple[int, ...], dtype: np.dtype | type) -> Iterator[np.ndarray]:
        """Yield a writable memory map in a staging folder; on clean exit rename it into place.

        Filling a memory map keeps the process's own memory flat however large the data set: the pages
        belong to the file, and the kernel writes them back and drops them as it needs.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / key_digest(key)
        staging = self.root / f".{final.name}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            array = open_memmap(staging / self.filename, mode="w+", dtype=dtype, shape=shape)
            yield array
            array.flush()
            del array
            (staging / "manifest.json").write_text(json.dumps({"key": key, "shape": list(shape)}, indent=1))
            if self.load(key) is None:  # absent or stale: replace it; a stale entry is never reused
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(staging, final)
            except OSError:  # a concurrent worker stored the same entry first: keep theirs
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def store(self, key: dict, array: np.ndarray) -> np.ndarray:
        """Write a whole in-memory array and return the cached memory map."""
        with self.writer(key, array.shape, array.dtype) as out:
            out[:] = array
        return self.load(key)
