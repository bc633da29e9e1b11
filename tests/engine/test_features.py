"""The feature cache: one extraction, reused only when everything that shapes the features matches."""

from __future__ import annotations

import json

import numpy as np
import torch

from medtransfer.data.synthetic import load_synthetic
from medtransfer.engine.cache import ArrayCache, key_digest
from medtransfer.engine.features import cached_features, extract, feature_cache, feature_key
from medtransfer.engine.pipeline import DataPath, InputPipeline, TableDataset, crop_transform
from medtransfer.models.backbone import build_backbone

CPU = torch.device("cpu")


def test_extract_matches_a_direct_forward_and_cache_round_trips(tmp_path):
    table = load_synthetic("synthetic:n=20,size=24")
    backbone = build_backbone("resnet18", "none", 32)
    data = DataPath(table, backbone.preprocess, CPU, 0)
    inputs = InputPipeline(backbone.preprocess, CPU)
    cache, key = feature_cache(tmp_path), feature_key(backbone, "none:seed=0", table)
    calls: list[np.ndarray] = []

    def fill(out):
        calls.append(extract(backbone, data.loader(np.arange(20), 8), inputs, out).copy())

    first, t1 = cached_features(cache, key, (20, 512), fill)
    second, t2 = cached_features(cache, key, (20, 512), fill)
    assert len(calls) == 1 and not t1["cache_hit"] and t2["cache_hit"]
    assert second.dtype == np.float16 and np.array_equal(np.asarray(first), np.asarray(second))

    ds = TableDataset(table, np.arange(3), crop_transform(backbone.preprocess))
    with torch.no_grad():
        direct = backbone.eval()(inputs(torch.stack([ds[i][0] for i in range(3)]))).numpy()
    assert np.allclose(calls[0][:3], direct, rtol=1e-3, atol=1e-3)  # float16 storage
    assert np.allclose(second[:3], direct, rtol=1e-3, atol=1e-3)


def test_key_changes_with_everything_that_shapes_features():
    table = load_synthetic("synthetic:n=20,size=24")
    other_data = load_synthetic("synthetic:n=20,size=24,seed=1")
    small = build_backbone("resnet18", "none", 32)
    big = build_backbone("resnet18", "none", 64)
    base = key_digest(feature_key(small, "none:seed=0", table))
    assert base == key_digest(feature_key(small, "none:seed=0", table))
    assert base != key_digest(feature_key(big, "none:seed=0", table))
    assert base != key_digest(feature_key(small, "none:seed=1", table))
    assert base != key_digest(feature_key(small, "none:seed=0", other_data))


def test_stale_or_damaged_entries_are_not_reused(tmp_path):
    cache = ArrayCache(tmp_path, "features")
    key = {"model": "m", "n": 2}
    cache.store(key, np.ones((2, 3), dtype=np.float32))
    entry = tmp_path / key_digest(key)
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["key"]["n"] = 3  # someone else's entry under this name
    (entry / "manifest.json").write_text(json.dumps(manifest))
    assert cache.load(key) is None
    (entry / "manifest.json").write_text("{broken")
    assert cache.load(key) is None
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_fill_leaves_no_entry_and_no_staging(tmp_path):
    cache = ArrayCache(tmp_path, "features")

    def fill(out):
        out[:1] = 1.0
        raise RuntimeError("extraction died")

    try:
        cached_features(cache, {"k": 1}, (4, 2), fill)
    except RuntimeError:
        pass
    assert cache.load({"k": 1}) is None
    assert list(tmp_path.iterdir()) == []
