"""Per-image hashes for duplicate search: an exact hash of the decoded pixels and a 64-bit perceptual hash.

Exact copies share an xxh3-64 hash of their decoded pixels (dtype, shape and bytes), so a PNG and a BMP of the same
pixels are one image, and two encodings that decode differently are not. Near copies (resized, re-encoded,
recompressed) are found by imagehash's DCT perceptual hash (64 bits). The hashes of a table are computed in a
process pool and cached by the table's data and sample order.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import imagehash
import numpy as np
import scipy.fftpack  # noqa: F401  (phash imports it on first call: imported here, forked workers inherit it)
import xxhash
from PIL import Image

from medtransfer.data.table import SampleTable

HASH_VERSION = 1  # bump when the hashes change in a way the cache key cannot see
HASH_SIZE = 8  # imagehash's default: an 8x8 block of a 32x32 DCT, 64 bits


HASH_CHUNK = 64  # rows per task of the hash pool


def pixel_hashes(pixels: np.ndarray) -> tuple[int, int]:
    """(exact, perceptual) 64-bit hashes of one image's decoded uint8 pixels."""
    pixels = np.ascontiguousarray(pixels)
    exact = xxhash.xxh3_64(f"{pixels.dtype.str}{pixels.shape}".encode())
    exact.update(pixels.data)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    image = Image.fromarray(pixels)
    grey = image if image.mode == "L" else image.convert("L")
    # phash shrinks to 32x32 itself; doing it here with PIL's reducing gap (integer box reduction first) costs a
    # third as much on a 600x450 photo and measured as stable under resizing (docs/methods.md).
    side = HASH_SIZE * 4
    small = grey.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    bits = imagehash.phash(small, hash_size=HASH_SIZE).hash.reshape(-1)
    return exact.intdigest(), int.from_bytes(np.packbits(bits).tobytes(), "big")


_TABLE: SampleTable | None = None  # the table a hash worker reads, set once per worker process


def _init_worker(table: SampleTable | None) -> None:
    global _TABLE
    _TABLE = table


def _hash_rows(rows: range) -> list[tuple[int, int, int]]:
    assert _TABLE is not None
    return [(row, *pixel_hashes(_TABLE.pixels(row))) for row in rows]


def hash_workers(workers: int | None) -> int:
    """Processes for the hash pass: every core (nothing else runs then), unless --workers 0 asks for none."""
    if workers == 0:
        return 0
    return max(workers or 0, min(8, os.cpu_count() or 1))


def compute_hashes(table: SampleTable, workers: int, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(N, 2) uint64: each row's exact and perceptual hash, decoded in `workers` processes."""
    out = np.zeros((len(table), 2), dtype=np.uint64)
    chunks = [range(k, min(k + HASH_CHUNK, len(table))) for k in range(0, len(table), HASH_CHUNK)]
    # A plain process pool, not a torch DataLoader: `inspect` never imports torch (seconds) just to hash.
    # Starting workers costs a moment: a small table is faster hashed in this process.
    if workers and len(table) >= 4 * HASH_CHUNK:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)  # fork: the table is inherited
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(table,)) as pool:
            for rows in pool.map(_hash_rows, chunks):
                _store(out, rows, progress)
        return out
    _init_worker(table)
    try:
        for chunk in chunks:
            _store(out, _hash_rows(chunk), progress)
    finally:
        _init_worker(None)  # hold no reference to the table beyond the pass
    return out


def _store(out: np.ndarray, rows: list[tuple[int, int, int]], progress: Callable[[int], None] | None) -> None:
    for row, exact, near in rows:
        out[row] = (exact, near)
    if progress:
        progress(len(rows))


def hash_key(table: SampleTable) -> dict:
    """The hash cache entry of a table: its data and sample order, and the hash definition."""
    from medtransfer.engine.cache import samples_key

    return {"version": HASH_VERSION, "exact": "xxh3_64(dtype, shape, pixels)", "near": f"phash{HASH_SIZE}",
            **samples_key(table)}


def table_hashes(table: SampleTable, root: Path | None, workers: int,
                 progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, bool]:
    """The table's hashes, from the cache under `root`/hashes (filled when absent); and whether it was a hit."""
    if root is None:
        return compute_hashes(table, workers, progress), False
    from medtransfer.engine.cache import ArrayCache

    cache, key = ArrayCache(Path(root) / "hashes", "hashes"), hash_key(table)
    hit = cache.load(key)
    if hit is not None:
        return np.asarray(hit), True
    hashes = compute_hashes(table, workers, progress)
    cache.store(key, hashes)
    return hashes, False
