"""Decoded-image cache: built once, bit-identical to decoding, read in batches by workers without copies."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from medtransfer.data.synthetic import load_synthetic
from medtransfer.engine.image_cache import cached_images, image_key
from medtransfer.engine.pipeline import CachedDataset, DataPath, TableDataset, crop_transform
from medtransfer.models.backbone import Preprocess

CPU = torch.device("cpu")
PRE = Preprocess(20, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.875)


def _by_row(loader) -> dict[int, tuple[torch.Tensor, int]]:
    return {int(r): (img, int(t)) for images, targets, rows in loader for img, t, r in zip(images, targets, rows)}


def test_cache_equals_decoding_and_is_built_once(tmp_path):
    table = load_synthetic("synthetic:n=30,size=24")
    path, first = cached_images(tmp_path, table, PRE, workers=0)
    again, second = cached_images(tmp_path, table, PRE, workers=0)
    assert path == again and not first["image_cache_hit"] and second["image_cache_hit"]
    images = np.load(path, mmap_mode="r")
    assert images.shape == (30, 3, 20, 20) and images.dtype == np.uint8
    decoded = TableDataset(table, np.arange(30), crop_transform(PRE))
    assert all(torch.equal(torch.from_numpy(np.array(images[i])), decoded[i][0]) for i in range(30))


def test_cached_and_uncached_paths_give_the_same_batches(tmp_path):
    table = load_synthetic("synthetic:n=30,size=24")
    path, _ = cached_images(tmp_path, table, PRE, workers=0)
    rows = np.array([29, 3, 17, 8, 0, 11, 5])
    plain = _by_row(DataPath(table, PRE, CPU, 0).loader(rows, 3))
    cached = _by_row(DataPath(table, PRE, CPU, 0, path).loader(rows, 3))
    with_worker = _by_row(DataPath(table, PRE, CPU, 1, path).loader(rows, 3, shuffle=True, seed=1))
    assert sorted(plain) == sorted(cached) == sorted(with_worker) == sorted(rows.tolist())
    for r in rows:
        assert torch.equal(plain[r][0], cached[r][0]) and plain[r][1] == cached[r][1]
        assert torch.equal(cached[r][0], with_worker[r][0])


def test_shuffled_batches_are_seeded_and_cover_every_row_once(tmp_path):
    table = load_synthetic("synthetic:n=30,size=24")
    path, _ = cached_images(tmp_path, table, PRE, workers=0)
    data = DataPath(table, PRE, CPU, 0, path)
    order = [rows.tolist() for _, _, rows in data.loader(np.arange(30), 8, shuffle=True, seed=4)]
    again = [rows.tolist() for _, _, rows in data.loader(np.arange(30), 8, shuffle=True, seed=4)]
    other = [rows.tolist() for _, _, rows in data.loader(np.arange(30), 8, shuffle=True, seed=5)]
    assert order == again and order != other
    assert sorted(sum(order, [])) == list(range(30)) and [len(b) for b in order] == [8, 8, 8, 6]


def test_a_worker_gets_the_file_name_not_the_pixels(tmp_path):
    table = load_synthetic("synthetic:n=200,size=64")
    path, _ = cached_images(tmp_path, table, Preprocess(64, PRE.mean, PRE.std, "bilinear", 1.0), workers=0)
    dataset = CachedDataset(path, np.arange(200), table.frame["target"].to_numpy())
    dataset[[0, 1]]  # opens the memory map in this process
    assert len(pickle.dumps(dataset)) < 20_000 < path.stat().st_size


def test_key_follows_the_geometry():
    table = load_synthetic("synthetic:n=30,size=24")
    assert image_key(table, PRE) != image_key(table, Preprocess(24, PRE.mean, PRE.std, "bicubic", 0.875))
    assert image_key(table, PRE) != image_key(table, Preprocess(20, PRE.mean, PRE.std, "bilinear", 0.875))
    # Normalisation happens on the tensor: it does not change the stored pixels.
    assert image_key(table, PRE) == image_key(table, Preprocess(20, (0.1, 0.2, 0.3), PRE.std, "bicubic", 0.875))


def test_extraction_batches_fill_the_cache_on_the_way_and_read_it_next_time(tmp_path):
    from medtransfer.engine.image_cache import image_batches

    table = load_synthetic("synthetic:n=30,size=24")
    with image_batches(tmp_path, table, PRE, 0, 8, CPU) as (batches, info):
        first = _by_row(batches)
    assert info == {"image_cache_hit": False}
    with image_batches(tmp_path, table, PRE, 0, 8, CPU) as (batches, info):
        second = _by_row(batches)
    assert info == {"image_cache_hit": True}
    assert sorted(first) == sorted(second) == list(range(30))
    assert all(torch.equal(first[r][0], second[r][0]) for r in range(30))


def test_a_partly_consumed_stream_commits_nothing(tmp_path):
    from medtransfer.engine.image_cache import image_batches, image_cache

    table = load_synthetic("synthetic:n=30,size=24")
    try:
        with image_batches(tmp_path, table, PRE, 0, 8, CPU) as (batches, _):
            next(iter(batches))
    except RuntimeError as exc:
        assert "8 of 30 rows" in str(exc)
    else:
        raise AssertionError("a partial stream must not be committed")
    assert image_cache(tmp_path).load(image_key(table, PRE)) is None
    assert not list((tmp_path / "images").iterdir())


def test_a_damaged_image_cache_is_rebuilt_and_reported(tmp_path):
    from medtransfer.engine.image_cache import image_batches

    table = load_synthetic("synthetic:n=30,size=24")
    path, _ = cached_images(tmp_path, table, PRE, workers=0)
    good = np.array(np.load(path, mmap_mode="r"))
    with open(path, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\xff" * 5000)
    with image_batches(tmp_path, table, PRE, 0, 8, CPU) as (batches, info):
        rebuilt = _by_row(batches)
    assert not info["image_cache_hit"] and "damaged" in info["image_cache_warnings"][0]
    assert all(torch.equal(rebuilt[r][0], torch.from_numpy(good[r])) for r in range(30))
    _, again = cached_images(tmp_path, table, PRE, workers=0)
    assert again["image_cache_hit"] and "image_cache_warnings" not in again
    assert np.array_equal(np.load(path, mmap_mode="r"), good)
