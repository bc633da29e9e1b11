"""3D MedMNIST .npz files: volumes as patients in the file's own splits, planes, slices, and bad files refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from helpers import volume_settings

from medtransfer.data.contact_sheet import _sheet_rows, contact_sheet
from medtransfer.data.npz import load_npz
from medtransfer.data.npz_volumes import NPZ_MODALITY, describe_npz_volumes, is_npz_volumes, is_volume_shape
from medtransfer.data.volume_options import VolumeOptions
from medtransfer.data.volume_slices import normalise
from medtransfer.errors import UserError

COUNTS = {"train": 20, "val": 6, "test": 6}


def write_volumes(path: Path, side: int = 28, counts: dict[str, int] = COUNTS, seed: int = 0) -> dict[str, np.ndarray]:
    """A file in 3D MedMNIST's layout: uint8 (N, D, H, W) volumes, uint8 (N, 1) labels; class 1 has a bright cube."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in counts.items():
        labels = np.arange(n) % 2
        volumes = rng.integers(1, 60, (n, side, side, side), dtype=np.uint8)
        lo, hi = side // 4, side - side // 4
        volumes[labels == 1, lo:hi, lo:hi, lo:hi] += 150
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = volumes, labels.astype(np.uint8).reshape(n, 1)
    np.savez_compressed(path, **arrays)
    return arrays


def options(**given) -> VolumeOptions:
    return volume_settings(**{"modalities": NPZ_MODALITY, "slices": "center:4"} | given)


@pytest.fixture
def organ(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / "organmnist3d.npz"
    return path, write_volumes(path)


def test_volumes_need_their_options_from_the_caller(organ):
    """The run's settings give them (data.load.volume_options); the reader has no defaults of its own."""
    with pytest.raises(TypeError, match="VolumeOptions"):
        load_npz(organ[0])


def test_each_volume_is_a_patient_in_its_own_split(organ):
    path, arrays = organ
    table = load_npz(path, options())

    # Labels 0 and 1 of OrganMNIST3D by their official names (MedMNIST v2 INFO), in label order.
    assert is_npz_volumes(table) and table.has_groups and table.classes == ["liver", "kidney-right"]
    assert any("MedMNIST" in note for note in table.notes)
    frame = table.frame
    assert frame.groupby("group")["split"].nunique().max() == 1  # no volume's slices span two splits
    assert {s: frame[frame["split"] == s]["group"].nunique() for s in COUNTS} == COUNTS
    assert frame.groupby("group").size().eq(4).all() and len(frame) == 4 * sum(COUNTS.values())
    assert (frame["group"].str.split("_").str[0] == frame["split"]).all()  # train_000012 is in train
    labels = frame.drop_duplicates("group").set_index("group")["label"]
    assert labels["val_000003"] == table.classes[arrays["val_labels"][3, 0]] and labels["train_000012"] == "liver"
    pixels = table.pixels(0)
    assert pixels.dtype == np.uint8 and pixels.shape == (28, 28)
    assert "28³" in table.layout and len(table.notes) == 1 and "MedMNIST v2" in table.notes[0]  # the names' source


def test_reader_is_picklable_and_reads_the_same_slices(organ):
    table = load_npz(organ[0], options())
    revived = pickle.loads(pickle.dumps(table.reader))  # DataLoader workers get a pickled copy
    for row in (0, 5, len(table) - 1):
        np.testing.assert_array_equal(revived(table.frame["ref"].iat[row]), table.pixels(row))


@pytest.mark.parametrize(("plane", "cut"), [
    ("axial", lambda v, k: v[k]),                   # (H, W) as stored: MedMNIST's own frames
    ("coronal", lambda v, k: v[::-1, k, :]),        # (D, W), D pointing up
    ("sagittal", lambda v, k: v[::-1, ::-1, k]),   # (D, H), D up, H right to left
])
def test_planes_cut_the_documented_array_axis(organ, plane, cut):
    path, arrays = organ
    table = load_npz(path, options(plane=plane))
    row = table.frame.index[table.frame["sample_id"] == f"test_000001/{plane}013"][0]
    volume = arrays["test_images"][1]
    np.testing.assert_array_equal(table.pixels(int(row)), cut(normalise(volume, "percentile"), 13))


def test_all_nonzero_keeps_only_slices_with_content_along_the_plane(tmp_path):
    path = tmp_path / "nodulemnist3d.npz"
    arrays = write_volumes(path, counts={"train": 2, "val": 2, "test": 2})
    arrays["train_images"][0, :, :, :5] = 0  # sagittal slices 0-4 (last axis) of one volume are empty
    np.savez_compressed(path, **arrays)
    table = load_npz(path, options(slices="all-nonzero", plane="sagittal"))
    counts = table.frame.groupby("group").size()
    assert counts["train_000000"] == 23 and counts["train_000001"] == 28
    axial = load_npz(path, options(slices="all-nonzero", plane="axial"))
    assert axial.frame.groupby("group").size()["train_000000"] == 28  # every axial slice still has content


def test_center_k_and_64_cubed_files(tmp_path):
    path = tmp_path / "fracturemnist3d_64.npz"
    write_volumes(path, side=64, counts={"train": 2, "val": 1, "test": 1})
    table = load_npz(path, options(slices="center:3"))
    assert table.pixels(0).shape == (64, 64)
    assert table.frame["sample_id"].iloc[:3].tolist() == [f"train_000000/axial{k:03d}" for k in (30, 31, 32)]
    assert "64³" in table.layout
    assert len(load_npz(path, options(slices="center:99"))) == 4 * 64  # K beyond the depth: every slice


def test_zscore_and_binary_masks_stay_visible(tmp_path):
    path = tmp_path / "vesselmnist3d.npz"
    arrays = write_volumes(path, counts={"train": 2, "val": 2, "test": 2})
    for key in ("train_images", "val_images", "test_images"):  # binary shapes, as in AdrenalMNIST3D/VesselMNIST3D
        masks = np.zeros_like(arrays[key])
        masks[:, 10:18, 10:18, 10:18] = 255
        arrays[key] = masks
    np.savez_compressed(path, **arrays)
    for method in ("percentile", "zscore"):
        table = load_npz(path, options(normalize=method))
        pixels = table.pixels(0)
        assert set(np.unique(pixels)) == {0, 255}  # a constant foreground is white, never blanked to black


def test_fingerprint_follows_content_and_slice_options(tmp_path):
    write_volumes(tmp_path / "a.npz", counts={"train": 2, "val": 2, "test": 2})
    write_volumes(tmp_path / "b.npz", counts={"train": 2, "val": 2, "test": 2})
    write_volumes(tmp_path / "c.npz", counts={"train": 2, "val": 2, "test": 2}, seed=1)
    a, b, c = (load_npz(tmp_path / f"{n}.npz", options()) for n in "abc")
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert load_npz(tmp_path / "a.npz", options(plane="coronal")).fingerprint != a.fingerprint
    assert load_npz(tmp_path / "a.npz", options(normalize="zscore")).fingerprint != a.fingerprint


@pytest.mark.parametrize(("shape", "volume"), [((5, 28, 28, 28), True), ((5, 64, 64, 64), True),
                                               ((5, 28, 28, 3), False), ((5, 28, 28, 1), False),
                                               ((5, 3, 28, 28), False), ((5, 28, 28), False)])
def test_volume_shapes_are_told_from_2d_images(shape, volume):
    assert is_volume_shape(shape) is volume


def test_inspection_counts_and_contact_sheet_rows_span_the_classes(organ, tmp_path):
    table = load_npz(organ[0], options())
    report = describe_npz_volumes(table)
    assert report["volume_shape"] == "28x28x28"
    assert {s: e["volumes"] for s, e in report["splits"].items()} == COUNTS
    assert report["splits"]["train"]["labels"] == {"liver": 10, "kidney-right": 10}
    assert report["slices"] == {"total": 128, "per_volume_min": 4, "per_volume_max": 4}
    titles = [title for title, _ in _sheet_rows(table)[:4]]
    assert titles == ["train_000000 (liver, train)", "train_000001 (kidney-right, train)", "val_000000 (liver, val)",
                      "val_000001 (kidney-right, val)"]
    assert contact_sheet(table, tmp_path / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- bad files: one line naming the file (or option) and what is wrong --------------------------------------


def _bad(tmp_path: Path, change) -> Path:
    path = tmp_path / "organmnist3d.npz"
    arrays = write_volumes(path, counts={"train": 4, "val": 2, "test": 2})
    change(arrays)
    np.savez(path, **arrays)
    return path


def _set(key, value):
    return lambda arrays: arrays.__setitem__(key, value(arrays[key]))


def _zero_volume(arrays):
    arrays["train_images"][3] = 0


BAD = {
    "all-zero volume": (_zero_volume, r"1 train volume\(s\) are all zeros.*train_000003"),
    "float volumes": (_set("val_images", lambda v: v.astype(np.float32) / 255), r"val_images is float32, not uint8"),
    "mixed sizes": (_set("test_images", lambda v: np.zeros((2, 64, 64, 64), np.uint8) + 1), r"\(64, 64, 64\).*28"),
    "2D beside 3D": (_set("test_images", lambda v: v[:, 0]), r"test_images has shape \(2, 28, 28\)"),
    "no volumes": (_set("val_images", lambda v: v[:0]), r"val_images holds no volumes"),
    "half labels": (_set("train_labels", lambda y: y / 2), r"train_labels .*not whole numbers"),
    "negative labels": (_set("val_labels", lambda y: y.astype(np.int64) - 1), r"val_labels .*negative"),
    "text labels": (_set("test_labels", lambda y: y.astype(str)), r"test_labels holds text"),
    "count mismatch": (_set("train_labels", lambda y: y[:-1]), r"train has 4 images but 3 labels"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_3d_files_are_refused_in_one_line(tmp_path, case):
    change, says = BAD[case]
    path = _bad(tmp_path, change)
    with pytest.raises(UserError, match=says) as caught:
        load_npz(path, options())
    assert str(path) in caught.value.line() and "\n" not in caught.value.line()


def test_tumor_slices_and_a_labels_csv_are_refused(organ):
    with pytest.raises(UserError, match=r"--slices tumor:3.*no.*segmentation|--slices tumor:3.*has none"):
        load_npz(organ[0], options(slices="tumor:3"))
    with pytest.raises(UserError, match=r"--labels-csv .*carries its own labels"):
        load_npz(organ[0], options(labels_csv="labels.csv"))
