"""Decoded-image cache: every sample decoded, resized and cropped once, stored as a uint8 memory map.

Decoding JPEG/PNG/DICOM is often slower than a small model's forward pass; reading a uint8 block is not.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from medtransfer.data.table import SampleTable
from medtransfer.engine.cache import ArrayCache, samples_key
from medtransfer.engine.pipeline import DataPath
from medtransfer.models.backbone import Preprocess

IMAGE_CACHE_VERSION = 2  # bump when decoding changes in a way the key cannot see (2: checksummed manifests)
DECODE_BATCH = 64


def image_key(table: SampleTable, pre: Preprocess) -> dict:
    """Everything that shapes the stored pixels: the data, the sample order and the resize/crop geometry."""
    return {"version": IMAGE_CACHE_VERSION, **samples_key(table), "size": pre.size, "crop_pct": pre.crop_pct,
            "interpolation": pre.interpolation}


def image_cache(root: Path) -> ArrayCache:
    """The image cache under a cache root."""
    return ArrayCache(Path(root) / "images", "images")


class Keep:
    """Pass batches through unchanged while storing their uint8 images into `out` (decode once, use twice)."""

    def __init__(self, batches: Iterable, out: np.ndarray) -> None:
        self.batches, self.out = batches, out
        self.written = np.zeros(len(out), dtype=bool)

    def __iter__(self) -> Iterator:
        for images, targets, rows in self.batches:
            self.out[rows.numpy()] = images.numpy()
            self.written[rows.numpy()] = True
            yield images, targets, rows


@contextlib.contextmanager
def image_batches(root: Path | None, table: SampleTable, pre: Preprocess, workers: int, batch_size: int,
                  device: torch.device) -> Iterator[tuple[Iterable, dict]]:
    """Every row's uint8 batches: read from the image cache under `root`, or decoded and stored on the way.

    Frozen extraction uses this: decoding in the loader's workers overlaps the forward pass, and the cache is
    filled as a by-product instead of in a pass of its own. It is committed only when every row went through.
    With no root (--no-image-cache) the batches are decoded and nothing is stored.
    """
    rows = np.arange(len(table))
    if root is None:
        yield DataPath(table, pre, device, workers).loader(rows, batch_size), {}
        return
    cache, key = image_cache(root), image_key(table, pre)
    hit = cache.load(key) is not None
    # A damaged entry found by the checksum is removed and rebuilt here; the run records that it happened.
    info: dict = {"image_cache_hit": hit} | ({"image_cache_warnings": cache.problems} if cache.problems else {})
    if hit:
        data = DataPath(table, pre, device, workers, cache.path(key))
        yield data.loader(rows, batch_size), info
        return
    with cache.writer(key, (len(table), 3, pre.size, pre.size), np.uint8) as out:
        keep = Keep(DataPath(table, pre, device, workers).loader(rows, batch_size), out)
        yield keep, info
        if not keep.written.all():
            raise RuntimeError(f"image cache: {keep.written.sum()} of {len(table)} rows stored; not committing it")


def cached_images(root: Path, table: SampleTable, pre: Preprocess, workers: int,
                  progress: Callable[[int], None] | None = None) -> tuple[Path, dict]:
    """The cache file of the table's decoded images (built when absent), and timing with the hit flag."""
    start = time.perf_counter()
    with image_batches(root, table, pre, workers, DECODE_BATCH, torch.device("cpu")) as (batches, info):
        if not info["image_cache_hit"]:  # a hit needs no pass: the file is what the caller reads
            for _, _, rows in batches:
                if progress:
                    progress(len(rows))
    timing = {**info, "decode_seconds": round(time.perf_counter() - start, 3)}
    return image_cache(root).path(image_key(table, pre)), timing
