"""The feature cache: one extraction, reused only when everything that shapes the features matches."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from medtransfer.data.folder import load_folder
from medtransfer.data.synthetic import load_synthetic
from medtransfer.engine.cache import ArrayCache, key_digest
from medtransfer.engine.features import cached_features, extract, feature_cache, feature_key, numerics
from medtransfer.engine.pipeline import DataPath, InputPipeline, TableDataset, crop_transform
from medtransfer.models.backbone import build_backbone

CPU = torch.device("cpu")


def test_extract_matches_a_direct_forward_and_cache_round_trips(tmp_path):
    table = load_synthetic("synthetic:n=20,size=24")
    backbone = build_backbone("resnet18", "none", 32)
    data = DataPath(table, backbone.preprocess, CPU, 0)
    inputs = InputPipeline(backbone.preprocess, CPU)
    cache, key = feature_cache(tmp_path), feature_key(backbone, "none:seed=0", table, CPU)
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
    base = key_digest(feature_key(small, "none:seed=0", table, CPU))
    assert base == key_digest(feature_key(small, "none:seed=0", table, CPU))
    assert base != key_digest(feature_key(big, "none:seed=0", table, CPU))
    assert base != key_digest(feature_key(small, "none:seed=1", table, CPU))
    assert base != key_digest(feature_key(small, "none:seed=0", other_data, CPU))


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


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # the key is built without entering autocast
def test_the_key_holds_the_device_and_its_autocast_dtype(monkeypatch):
    table = load_synthetic("synthetic:n=20,size=24")
    backbone = build_backbone("resnet18", "none", 32)
    cpu = feature_key(backbone, "none:seed=0", table, CPU)
    assert numerics(CPU) == {"device": "cpu", "autocast": "float32"} and cpu["autocast"] == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    bf16 = feature_key(backbone, "none:seed=0", table, torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    fp16 = feature_key(backbone, "none:seed=0", table, torch.device("cuda"))
    assert (bf16["device"], bf16["autocast"], fp16["autocast"]) == ("cuda", "bfloat16", "float16")
    assert len({key_digest(cpu), key_digest(bf16), key_digest(fp16)}) == 3


def _extract_folder(root, cache, backbone):
    """Features of the folder's images through the feature cache, and the cache's timing."""
    table = load_folder(root)
    data = DataPath(table, backbone.preprocess, CPU, 0)

    def fill(out):
        extract(backbone, data.loader(np.arange(len(table)), 8), InputPipeline(backbone.preprocess, CPU), out)

    features, timing = cached_features(cache, feature_key(backbone, "none:seed=0", table, CPU),
                                       (len(table), backbone.num_features), fill)
    return table, np.asarray(features), timing


def test_class_files_swapped_with_their_times_restored_are_a_miss_with_the_new_data(tmp_path):
    # Uncompressed PNGs of one size: every file keeps its size, and touch -r restores its mtime.
    rng = np.random.default_rng(0)
    for name, level in (("a", 30), ("b", 200)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(4):
            pixels = (rng.integers(0, 40, (24, 24)) + level).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png", compress_level=0)
    backbone = build_backbone("resnet18", "none", 32)
    cache = feature_cache(tmp_path / "cache")
    table, before, first = _extract_folder(tmp_path / "data", cache, backbone)
    a_files, b_files = sorted((tmp_path / "data" / "a").iterdir()), sorted((tmp_path / "data" / "b").iterdir())
    for x, y in zip(a_files, b_files):  # swap the classes' contents, then `touch -r` each file to its old times
        times = {p: (p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (x, y)}
        sizes = (x.stat().st_size, y.stat().st_size)
        bx, by = x.read_bytes(), y.read_bytes()
        x.write_bytes(by), y.write_bytes(bx)
        for p in (x, y):
            os.utime(p, ns=times[p])
        assert (x.stat().st_size, y.stat().st_size) == sizes and x.stat().st_mtime_ns == times[x][1]
    swapped, after, second = _extract_folder(tmp_path / "data", cache, backbone)
    assert not first["cache_hit"] and not second["cache_hit"] and first["cache_entry"] != second["cache_entry"]
    assert list(swapped.frame["label"]) == list(table.frame["label"])
    n = len(a_files)
    assert not np.allclose(before[:n], before[n:], atol=1e-2)  # the classes' features differ, and swapped places:
    assert np.allclose(after[:n], before[n:], atol=1e-3) and np.allclose(after[n:], before[:n], atol=1e-3)


def test_bytes_overwritten_in_features_npy_give_a_rebuild_and_a_warning(tmp_path):
    cache = feature_cache(tmp_path)
    key, calls = {"k": 1}, []

    def fill(out):
        calls.append(1)
        out[:] = np.arange(out.size, dtype=np.float32).reshape(out.shape) % 100

    first, t1 = cached_features(cache, key, (100, 512), fill)  # 100 KB of float16
    expected = np.asarray(first).copy()
    with open(cache.path(key), "r+b") as handle:
        handle.seek(50_000)
        handle.write(os.urandom(40_000))
    again, t2 = cached_features(cache, key, (100, 512), fill)
    assert not t1["cache_hit"] and not t2["cache_hit"] and len(calls) == 2
    assert np.array_equal(np.asarray(again), expected)
    assert "cache_warnings" not in t1 and len(t2["cache_warnings"]) == 1 and "damaged" in t2["cache_warnings"][0]
    third, t3 = cached_features(feature_cache(tmp_path), key, (100, 512), fill)
    assert t3["cache_hit"] and "cache_warnings" not in t3 and len(calls) == 2
