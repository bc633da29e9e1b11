"""Frozen mode: one forward pass per sample, stored in an on-disk cache keyed by all that shapes the features."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from platformdirs import user_cache_dir

from medtransfer.data.table import SampleTable
from medtransfer.engine.device import autocast
from medtransfer.engine.pipeline import TableDataset, build_transform, make_loader
from medtransfer.models.backbone import Backbone

CACHE_VERSION = 1  # bump when extraction changes in a way the key cannot see


def default_cache_dir() -> Path:
    """The user cache folder (e.g. ~/.cache/medtransfer/features)."""
    return Path(user_cache_dir("medtransfer")) / "features"


def feature_key(backbone: Backbone, weights_id: str, table: SampleTable) -> dict:
    """Everything that changes the features: model, weights, preprocessing, pooling, data, sample order."""
    ids = hashlib.sha256("\n".join(table.frame["sample_id"].astype(str)).encode()).hexdigest()
    return {"version": CACHE_VERSION, "model": backbone.timm_name, "weights": weights_id,
            "preprocess": backbone.preprocess.as_dict(), "pooling": backbone.pooling,
            "data": table.fingerprint, "samples": ids, "n": len(table)}


def key_digest(key: dict) -> str:
    """Stable short name of a cache entry."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


class FeatureCache:
    """Entries are folders <digest>/{features.npy (float16), manifest.json}, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def load(self, key: dict) -> np.ndarray | None:
        """The cached features, memory-mapped, or None when absent or stale (manifest differs)."""
        entry = self.root / key_digest(key)
        try:
            manifest = json.loads((entry / "manifest.json").read_text())
            if manifest.get("key") != key:
                return None
            return np.load(entry / "features.npy", mmap_mode="r")
        except (OSError, ValueError):
            return None

    def store(self, key: dict, features: np.ndarray) -> np.ndarray:
        """Write float16 features and the manifest into a temp folder, then rename it into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / key_digest(key)
        staging = self.root / f".{final.name}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        np.save(staging / "features.npy", features.astype(np.float16))
        (staging / "manifest.json").write_text(json.dumps({"key": key, "shape": list(features.shape)}, indent=1))
        if self.load(key) is None:  # absent or stale: replace it; a stale entry is never reused
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(staging, final)
        except OSError:  # a concurrent worker stored the same features first: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
        return self.load(key)


@torch.inference_mode()
def extract(backbone: Backbone, table: SampleTable, device: torch.device, batch_size: int, workers: int,
            progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Features of every sample of the table, in table order."""
    backbone.eval().to(device)
    if device.type == "cuda":
        backbone.to(memory_format=torch.channels_last)
    dataset = TableDataset(table, np.arange(len(table)), build_transform(backbone.preprocess))
    out = np.empty((len(table), backbone.num_features), dtype=np.float32)
    for images, _, rows in make_loader(dataset, batch_size, False, workers, device):
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            out[rows.numpy()] = backbone(images).float().cpu().numpy()
        if progress:
            progress(len(rows))
    return out


def cached_features(cache: FeatureCache, key: dict, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, dict]:
    """Load features from the cache, or compute and store them; returns timing with the hit flag."""
    start = time.perf_counter()
    hit = cache.load(key)
    if hit is not None:
        return hit, {"cache_hit": True, "extract_seconds": 0.0, "cache_entry": key_digest(key)}
    features = cache.store(key, compute())
    return features, {"cache_hit": False, "extract_seconds": round(time.perf_counter() - start, 3),
                      "cache_entry": key_digest(key)}
