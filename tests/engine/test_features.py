"""The feature cache: one extraction, reused only when everything that shapes the features matches."""

from __future__ import annotations

import json

import numpy as np
import torch

from medtransfer.data.synthetic import load_synthetic
from medtransfer.engine.features import FeatureCache, cached_features, extract, feature_key, key_digest
from medtransfer.models.backbone import build_backbone


def test_extract_matches_a_direct_forward_and_cache_round_trips(tmp_path):
    table = load_synthetic("synthetic:n=20,size=24")
    backbone = build_backbone("resnet18", "none", 32)
    features = extract(backbone, table, torch.device("cpu"), batch_size=8, workers=0)
    assert features.shape == (20, 512)
    from medtransfer.engine.pipeline import TableDataset, build_transform

    ds = TableDataset(table, np.arange(3), build_transform(backbone.preprocess))
    with torch.no_grad():
        direct = backbone(torch.stack([ds[i][0] for i in range(3)])).numpy()
    assert np.allclose(features[:3], direct, atol=1e-5)

    cache = FeatureCache(tmp_path)
    key = feature_key(backbone, "none:seed=0", table)
    calls = []

    def compute():
        calls.append(1)
        return features

    first, t1 = cached_features(cache, key, compute)
    second, t2 = cached_features(cache, key, compute)
    assert calls == [1] and not t1["cache_hit"] and t2["cache_hit"]
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert second.dtype == np.float16
    assert np.allclose(second, features, rtol=1e-3, atol=1e-3)


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
    cache = FeatureCache(tmp_path)
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
