"""Frozen mode: one forward pass per sample, stored in an on-disk float16 cache keyed by all that shapes it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from medtransfer.data.table import SampleTable
from medtransfer.engine.cache import ArrayCache, key_digest, samples_key
from medtransfer.engine.device import autocast
from medtransfer.engine.image_cache import image_batches
from medtransfer.engine.pipeline import InputPipeline
from medtransfer.models.backbone import Backbone

CACHE_VERSION = 1  # bump when extraction changes in a way the key cannot see


def feature_cache(root: Path) -> ArrayCache:
    """The feature cache under a cache root."""
    return ArrayCache(Path(root) / "features", "features")


def feature_key(backbone: Backbone, weights_id: str, table: SampleTable) -> dict:
    """Everything that changes the features: model, weights, preprocessing, pooling, data, sample order."""
    return {"version": CACHE_VERSION, "model": backbone.timm_name, "weights": weights_id,
            "preprocess": backbone.preprocess.as_dict(), "pooling": backbone.pooling, **samples_key(table)}


@torch.inference_mode()
def extract(backbone: Backbone, batches: Iterable, inputs: InputPipeline, out: np.ndarray,
            progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Write the features of each (uint8 images, _, rows) batch into `out[rows]`; bf16 + channels-last on CUDA."""
    device = inputs.device
    backbone.eval().to(device)
    if device.type == "cuda":
        backbone.to(memory_format=torch.channels_last)
    for images, _, rows in batches:
        with autocast(device):
            features = backbone(inputs(images))
        out[rows.numpy()] = features.float().cpu().numpy()
        if progress:
            progress(len(rows))
    return out


def extract_table(backbone: Backbone, table: SampleTable, out: np.ndarray, device: torch.device, workers: int,
                  batch_size: int, image_root: Path | None,
                  task: Callable[[int], contextlib.AbstractContextManager]) -> dict:
    """Features of every row into `out`, through the image cache under `image_root` (filled on the way, or read).

    The batch starts at `batch_size` and halves on out-of-memory until it fits. `task(batch)` gives the progress
    callback. Returns the image-cache flag and the batch size used.
    """
    while True:
        try:
            with (task(batch_size) as advance,
                  image_batches(image_root, table, backbone.preprocess, workers, batch_size, device) as (batches, info)):
                extract(backbone, batches, InputPipeline(backbone.preprocess, device), out, advance)
            return {**info, "extract_batch_size": batch_size}
        except torch.OutOfMemoryError:
            if batch_size <= 1:
                raise
            batch_size //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()


def cached_features(cache: ArrayCache, key: dict, shape: tuple[int, int],
                    fill: Callable[[np.ndarray], None]) -> tuple[np.ndarray, dict]:
    """Load features from the cache, or let `fill` write them into a new float16 entry; timing has the hit flag."""
    start = time.perf_counter()
    hit = cache.load(key)
    if hit is not None:
        return hit, {"cache_hit": True, "extract_seconds": 0.0, "cache_entry": key_digest(key)}
    with cache.writer(key, shape, np.float16) as out:
        fill(out)
    return cache.load(key), {"cache_hit": False, "extract_seconds": round(time.perf_counter() - start, 3),
                             "cache_entry": key_digest(key)}
