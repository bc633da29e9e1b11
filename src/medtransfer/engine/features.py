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

CACHE_VERSION = 2  # bump when extraction changes in a way the key cannot see (2: device and autocast dtype)


def feature_cache(root: Path) -> ArrayCache:
    """The feature cache under a cache root."""
    return ArrayCache(Path(root) / "features", "features")


def numerics(device: torch.device) -> dict:
    """The arithmetic `extract` uses on a device: its type and the autocast dtype (bf16/fp16 on CUDA, none on CPU)."""
    dtype = getattr(autocast(device), "fast_dtype", None)  # what `extract` enters, so the two cannot drift apart
    return {"device": device.type, "autocast": str(dtype).removeprefix("torch.") if dtype is not None else "float32"}


def model_key(backbone: Backbone, weights_id: str) -> dict:
    """The model's part of the feature key: architecture, weights, preprocessing and pooling.

    Also how a study groups the frozen runs that share an entry (study/executors.cache_group), from a meta-device
    backbone: one rule for both, so the grouping cannot drift from the cache.
    """
    return {"model": backbone.model_id, "weights": weights_id, "preprocess": backbone.preprocess.as_dict(),
            "pooling": backbone.pooling}


def feature_key(backbone: Backbone, weights_id: str, table: SampleTable, device: torch.device) -> dict:
    """Everything that changes the features: model, weights, preprocessing, pooling, numerics, data, sample order.

    A GPU's bf16 features differ from a CPU's fp32 ones in the third digit: a run on one never reads the other's.
    """
    return {"version": CACHE_VERSION, **model_key(backbone, weights_id), **numerics(device), **samples_key(table)}


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
    """Load features from the cache, or let `fill` write them into a new float16 entry; timing has the hit flag,
    and `cache_warnings` when a damaged entry was found (and rebuilt)."""
    start = time.perf_counter()
    seen = len(cache.problems)
    hit = cache.load(key)
    if hit is not None:
        timing = {"cache_hit": True, "extract_seconds": 0.0, "cache_entry": key_digest(key)}
    else:
        with cache.writer(key, shape, np.float16) as out:
            fill(out)
        hit = cache.load(key)
        timing = {"cache_hit": False, "extract_seconds": round(time.perf_counter() - start, 3),
                  "cache_entry": key_digest(key)}
    if cache.problems[seen:]:
        timing["cache_warnings"] = cache.problems[seen:]
    return hit, timing
