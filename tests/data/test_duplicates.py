"""Exact and near-duplicate images across splits: planted copies are found, distinct real images are not paired,
and --dedup group / drop leave no copy across splits."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtransfer.data.dedup import apply_dedup
from medtransfer.data.duplicate_hashes import pixel_hashes
from medtransfer.data.duplicate_scan import NEAR_THRESHOLD, exact_pairs, near_pairs, scan_table
from medtransfer.data.folder import load_folder
from medtransfer.data.splits import SplitPlan, assign_splits

from helpers import default_settings

CONSOLE = Path(sys.executable).with_name("medtransfer")  # the installed console script


def _smooth(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A distinct, photo-like image: a random 6x6 colour field, upsampled smoothly."""
    low = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC))


def _jpeg(pixels: np.ndarray, quality: int, path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    path.write_bytes(buffer.getvalue())


def planted_folder(root: Path, carved: bool = False, per_class: int = 8) -> set[tuple[str, str, str]]:
    """Distinct images in train/val/test class folders (or class folders only, when `carved`), and copies of some
    planted across splits: byte-identical, the same pixels as BMP, resized down and up, and re-encoded as JPEG.
    Returns the planted (sample id, sample id, kind) triples, ids sorted."""
    rng = np.random.default_rng(7)
    images: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        for cls in ("a", "b"):
            for k in range(per_class if split == "train" else per_class // 2):
                rel = f"{cls}/{split}_{k}.png" if carved else f"{split}/{cls}/img_{k}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                images[rel] = _smooth(rng)
                Image.fromarray(images[rel]).save(root / rel)

    def where(split: str, cls: str, name: str) -> str:
        return f"{cls}/{split}_{name}" if carved else f"{split}/{cls}/{name}"

    plants = []

    def plant(source: tuple[str, str, int], target: tuple[str, str, str], kind: str, make) -> None:
        split, cls, k = source
        rel = f"{cls}/{split}_{k}.png" if carved else f"{split}/{cls}/img_{k}.png"
        out = root / where(*target)
        make(images[rel], root / rel, out)
        plants.append((*sorted((rel, out.relative_to(root).as_posix())), kind))

    plant(("train", "a", 0), ("test", "a", "copy_exact.png"), "exact", lambda px, src, out: shutil.copy(src, out))
    plant(("train", "a", 1), ("val", "a", "copy_pixels.bmp"), "exact",
          lambda px, src, out: Image.fromarray(px).save(out))
    plant(("train", "b", 2), ("val", "b", "copy_half.png"), "near",
          lambda px, src, out: Image.fromarray(px).resize((32, 32), Image.Resampling.BILINEAR).save(out))
    plant(("train", "a", 3), ("test", "a", "copy_double.png"), "near",
          lambda px, src, out: Image.fromarray(px).resize((128, 128), Image.Resampling.BICUBIC).save(out))
    plant(("train", "b", 4), ("test", "b", "copy_q75.jpg"), "near", lambda px, src, out: _jpeg(px, 75, out))
    plant(("val", "a", 0), ("test", "b", "copy_small_q80.jpg"), "near",
          lambda px, src, out: _jpeg(np.asarray(Image.fromarray(px).resize((48, 48))), 80, out))
    return set(plants)


def _found(scan) -> set[tuple[str, str, str]]:
    ids = scan.sample_ids
    return ({(*sorted((ids[a], ids[b])), "exact") for a, b in scan.exact}
            | {(*sorted((ids[a], ids[b])), "near") for a, b in scan.near})


def test_every_planted_copy_is_found_and_nothing_else(tmp_path):
    planted = planted_folder(tmp_path / "data")
    table = load_folder(tmp_path / "data")
    scan = scan_table(table, tmp_path / "cache", workers=0)
    assert _found(scan) == planted
    record = apply_dedup(table, scan, "warn").record(table.frame)
    assert record["exact_pairs"] == 2 and record["near_pairs"] == 4
    assert record["exact"]["train-test"] == 1 and record["exact"]["train-val"] == 1
    assert record["near"] == {"train-val": 1, "train-test": 2, "val-test": 1, "within-split": 0}
    assert record["across_splits"] == 6 and record["action"] == "warn"
    assert {(e["a"], e["b"]) for e in record["examples"]} <= {p[:2] for p in planted} | {p[1::-1] for p in planted}


def test_hashes_are_cached_and_a_second_scan_agrees(tmp_path):
    planted_folder(tmp_path / "data")
    table = load_folder(tmp_path / "data")
    first = scan_table(table, tmp_path / "cache", workers=0)
    second = scan_table(table, tmp_path / "cache", workers=0)
    assert not first.cache_hit and second.cache_hit
    assert _found(first) == _found(second)
    assert any((tmp_path / "cache" / "hashes").iterdir())


def test_the_hash_pool_gives_the_hashes_of_the_serial_pass(tmp_path):
    from medtransfer.data.duplicate_hashes import compute_hashes

    planted_folder(tmp_path / "data", per_class=70)  # enough rows to start worker processes
    table = load_folder(tmp_path / "data")
    assert np.array_equal(compute_hashes(table, 2), compute_hashes(table, 0))


def test_exact_hash_sees_pixels_and_shape_not_files():
    rng = np.random.default_rng(0)
    px = _smooth(rng)
    assert pixel_hashes(px) == pixel_hashes(px.copy())
    assert pixel_hashes(px)[0] != pixel_hashes(px.reshape(32, 128, 3))[0]  # same bytes, other shape
    changed = px.copy()
    changed[0, 0, 0] ^= 1
    assert pixel_hashes(changed)[0] != pixel_hashes(px)[0]
    assert pixel_hashes(px[:, :, :1])[1] == pixel_hashes(px[:, :, 0])[1]  # (H, W, 1) is grey


def test_pair_search_matches_brute_force():
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, (300, 4)).astype(np.uint64)
    codes = np.concatenate([base, base[:100] ^ flips[:100, 0] ^ flips[:100, 1], base[:50] ^ np.bitwise_or.reduce(
        flips[:50], axis=1)])
    pairs, distance = near_pairs(codes, 4)
    bits = np.unpackbits(codes.view(np.uint8)).reshape(len(codes), 64)
    full = (bits[:, None] != bits[None]).sum(-1)
    i, j = np.triu_indices(len(codes), 1)
    expected = {(a, b) for a, b in zip(i, j) if full[a, b] <= 4}
    assert {tuple(p) for p in pairs.tolist()} == expected and len(expected) >= 150
    assert all(full[a, b] == d for (a, b), d in zip(pairs, distance))
    groups = exact_pairs(np.array([5, 1, 5, 2, 5, 1], dtype=np.uint64))
    assert {tuple(p) for p in groups.tolist()} == {(0, 2), (0, 4), (2, 4), (1, 5)}


def _distinct_breastmnist(path: Path, n: int) -> np.ndarray:
    """BreastMNIST images no two of which correlate at 0.9 or more (pixel Pearson r, 28x28).

    The file itself holds near-copies (BUSI's known duplicates, found and listed by the scan), so "distinct" is
    decided by a measure independent of the perceptual hash before the hash is tested on them.
    """
    data = np.load(path)
    images = np.concatenate([data[f"{s}_images"] for s in ("train", "val", "test")])
    from bench.dedup_cost import distinct_rows

    keep = distinct_rows(images)
    assert len(keep) >= n
    return images[keep[:n]]


def test_no_false_pair_among_500_distinct_real_images(shared_data):
    ham = sorted((shared_data / "ham10000_subset" / "HAM10000_images").glob("*.jpg"))
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in ham]
    ultrasound = list(_distinct_breastmnist(shared_data / "medmnist" / "breastmnist.npz", 500 - len(photos)))
    hashes = np.array([pixel_hashes(px) for px in photos + ultrasound], dtype=np.uint64)
    assert len(hashes) == 500
    assert len(exact_pairs(hashes[:, 0])) == 0
    pairs, distance = near_pairs(hashes[:, 1], NEAR_THRESHOLD)
    assert len(pairs) == 0, distance


def test_breastmnist_known_copies_are_found(shared_data):
    """The real file's exact train/test copy (the same BUSI image in both splits) is reported."""
    from medtransfer.data.sources import load_source
    from medtransfer.data.manifest import ManifestColumns

    table = load_source(str(shared_data / "medmnist" / "breastmnist.npz"), ManifestColumns(), None, False)
    record = apply_dedup(table, scan := scan_table(table, None, workers=0), "warn").record(table.frame)
    assert record["exact"]["train-test"] >= 1 and record["across_splits"] > 0
    a, b = scan.exact[0]
    assert np.array_equal(table.pixels(int(a)), table.pixels(int(b)))


def _row_split(frame):
    return dict(zip(frame["sample_id"], frame["split"]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_keeps_every_planted_copy_in_one_carved_split(tmp_path, seed):
    planted = planted_folder(tmp_path / "data", carved=True)
    table = load_folder(tmp_path / "data")
    assert table.frame["split"].isna().all()
    done = apply_dedup(table, scan_table(table, None, workers=0), "group")
    frame = assign_splits(done.table, default_settings(SplitPlan, test_fraction=0.3, val_fraction=0.3, split_seed=seed))
    split = _row_split(frame)
    assert all(split[a] == split[b] for a, b, _ in planted)
    record = done.record(frame)
    assert record["across_splits"] == 0 and record["exact_pairs"] + record["near_pairs"] == len(planted)
    # Without grouping, carving does separate copies for some seed (the leak the option closes).
    plain = [assign_splits(table, default_settings(SplitPlan, test_fraction=0.3, val_fraction=0.3, split_seed=s))
             for s in range(6)]
    assert any(_row_split(f)[a] != _row_split(f)[b] for f in plain for a, b, _ in planted)


def test_group_merges_patients_that_share_a_copy(tmp_path):
    from dataclasses import replace

    planted_folder(tmp_path / "data", carved=True)
    table = load_folder(tmp_path / "data")
    frame = table.frame.copy()
    frame["group"] = [f"p{k // 2}" for k in range(len(frame))]  # two images per patient
    table = replace(table, frame=frame)
    scan = scan_table(table, None, workers=0)
    grouped = apply_dedup(table, scan, "group").table.frame
    for a, b in scan.pairs:
        assert grouped["split_group"].iat[a] == grouped["split_group"].iat[b]
        pa, pb = frame["group"].iat[a], frame["group"].iat[b]
        # every image of both patients is in the one merged unit
        units = set(grouped.loc[frame["group"].isin([pa, pb]), "split_group"])
        assert len(units) == 1
    assert grouped["split_group"].nunique() < frame["group"].nunique()


def test_group_on_predefined_splits_changes_nothing_and_reports(tmp_path):
    planted_folder(tmp_path / "data")
    table = load_folder(tmp_path / "data")
    done = apply_dedup(table, scan_table(table, None, workers=0), "group")
    assert "split_group" not in done.table.frame and "predefined" in done.effect
    assert done.record(table.frame)["across_splits"] == 6


def test_drop_keeps_one_copy_of_each_cluster_preferring_train(tmp_path):
    planted = planted_folder(tmp_path / "data")
    table = load_folder(tmp_path / "data")
    scan = scan_table(table, None, workers=0)
    done = apply_dedup(table, scan, "drop")
    kept = set(done.table.frame["sample_id"])
    assert len(kept) == len(table) - len(planted)
    for a, b, _ in planted:
        assert (a in kept) != (b in kept)  # exactly one copy of each planted pair stays
    train_side = {x for a, b, _ in planted for x in (a, b) if x.startswith("train/")}
    assert train_side <= kept  # the train copy is the one kept
    assert done.dropped == {"val": 2, "test": 4}
    again = scan_table(done.table, None, workers=0)
    assert len(again.pairs) == 0
    record = done.record(assign_splits(done.table, default_settings(SplitPlan)))
    rank = {"train": 0, "val": 1, "test": 2}
    expected = {max((a, b), key=lambda x: rank[x.split("/")[0]]) for a, b, _ in planted}
    assert kept.isdisjoint(expected) and len(expected) == 6
    assert record["across_splits"] == 0 and set(record["dropped_examples"]) <= expected


@pytest.mark.slow  # one installed-CLI run: about 40 s on a busy 2-core machine
def test_cli_group_run_records_duplicates_in_metrics(tmp_path):
    planted = planted_folder(tmp_path / "data", carved=True)
    out = tmp_path / "run"
    done = subprocess.run([str(CONSOLE), "train", str(tmp_path / "data"), "--backbone", "resnet18", "--weights", "none",
                           "--image-size", "32", "--epochs", "1", "--bootstrap", "100", "-q", "--dedup", "group",
                           "--workers", "0", "--out", str(out), "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "metrics.json").read_text())["duplicates"]
    assert record["action"] == "group" and record["threshold"] == NEAR_THRESHOLD
    assert record["exact_pairs"] == 2 and record["near_pairs"] == 4 and record["across_splits"] == 0
    assert record["exact"]["within-split"] == 2
    assert {"a", "b", "kind", "splits"} <= set(record["examples"][0])
    assert any((tmp_path / "cache" / "hashes").iterdir())  # cached beside the decoded images
    import pandas as pd

    predicted = pd.read_csv(out / "predictions.csv")
    split = dict(zip(predicted["sample_id"], predicted["split"]))  # val and test rows; the rest are train
    assert all(split.get(a, "train") == split.get(b, "train") for a, b, _ in planted)
