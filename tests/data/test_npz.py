"""MedMNIST-style .npz files: official splits, labels, pixels, and bad files as one-line UserErrors."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medtransfer.data.npz import load_npz
from medtransfer.data.table import with_class_order
from medtransfer.errors import UserError

SPLIT_SIZES = {"train": 7, "val": 3, "test": 4}


def _arrays(shape: tuple[int, ...], seed: int = 0, classes: int = 2) -> dict[str, np.ndarray]:
    """{split}_images / {split}_labels with MedMNIST dtypes: uint8 images, uint8 (N,1) labels."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in SPLIT_SIZES.items():
        out[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % classes).astype(np.uint8).reshape(n, 1)
    return out


def _write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("shape", [(8, 8), (6, 5, 3)], ids=["grey", "rgb"])
def test_official_splits_labels_and_pixels_are_kept(tmp_path, shape):
    arrays = _arrays(shape, classes=3)
    table = load_npz(_write(tmp_path / "tiny.npz", arrays))

    assert len(table) == sum(SPLIT_SIZES.values())
    assert table.frame["split"].value_counts().to_dict() == SPLIT_SIZES
    assert table.classes == ["0", "1", "2"]
    assert not table.has_groups
    for split, n in SPLIT_SIZES.items():
        rows = table.frame.index[table.frame["split"] == split]
        assert len(rows) == n
        labels = [str(int(v)) for v in arrays[f"{split}_labels"][:, 0]]
        assert table.frame.loc[rows, "label"].tolist() == labels
        for k, row in enumerate(rows):
            pixels = table.pixels(int(row))
            assert pixels.dtype == np.uint8 and pixels.shape == shape
            np.testing.assert_array_equal(pixels, arrays[f"{split}_images"][k])
    assert table.frame["target"].tolist() == [int(x) for x in table.frame["label"]]


def test_classes_sort_numerically_not_as_text(tmp_path):
    arrays = _arrays((4, 4))
    arrays["train_labels"] = np.array([[0], [2], [10], [1], [2], [10], [0]], dtype=np.uint8)
    table = load_npz(_write(tmp_path / "many.npz", arrays))
    assert table.classes[:4] == ["0", "1", "2", "10"]


def test_classes_sort_numerically_with_targets_to_match(tmp_path):
    arrays = _arrays((4, 4))
    arrays["train_labels"] = np.array([[9], [10], [2], [10], [9], [0], [1]], dtype=np.uint8)
    table = load_npz(_write(tmp_path / "many.npz", arrays))
    assert table.classes == ["0", "1", "2", "9", "10"]  # as text "10" would sort before "2"
    assert not table.ordinal and table.notes == []
    train = table.frame[table.frame["split"] == "train"]
    assert train["target"].tolist() == [3, 4, 2, 4, 3, 0, 1]


@pytest.mark.parametrize("name", ["retinamnist.npz", "retinamnist_224.npz", "RetinaMNIST_64.npz"])
def test_retinamnist_is_an_ordinal_task_in_numeric_order(tmp_path, name):
    table = load_npz(_write(tmp_path / name, _arrays((4, 4), classes=5)))
    assert table.ordinal
    assert table.classes == ["0", "1", "2", "3", "4"]
    assert table.frame["target"].tolist() == [int(x) for x in table.frame["label"]]
    assert any("ordinal" in note and "0, 1, 2, 3, 4" in note for note in table.notes)


def test_a_non_retina_npz_can_be_given_a_class_order(tmp_path):
    table = load_npz(_write(tmp_path / "tiny.npz", _arrays((4, 4), classes=3)))
    ordered = with_class_order(table, ["2", "1", "0"])
    assert ordered.ordinal and ordered.classes == ["2", "1", "0"]
    assert (ordered.frame["target"] == 2 - table.frame["target"]).all()
    assert ordered.pixels(0).shape == (4, 4)


def test_file_with_only_some_splits_loads_those(tmp_path):
    arrays = {k: v for k, v in _arrays((4, 4)).items() if not k.startswith("val_")}
    table = load_npz(_write(tmp_path / "noval.npz", arrays))
    assert set(table.frame["split"]) == {"train", "test"}


def test_fingerprint_follows_file_content(tmp_path):
    a = load_npz(_write(tmp_path / "a.npz", _arrays((4, 4), seed=0)))
    b = load_npz(_write(tmp_path / "b.npz", _arrays((4, 4), seed=0)))
    c = load_npz(_write(tmp_path / "c.npz", _arrays((4, 4), seed=1)))
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


def _missing_labels(tmp_path: Path) -> Path:
    arrays = _arrays((4, 4))
    del arrays["val_labels"]
    return _write(tmp_path / "bad.npz", arrays)


def _wrong_dtype(tmp_path: Path) -> Path:
    arrays = _arrays((4, 4))
    arrays["train_images"] = arrays["train_images"].astype(np.float32) / 255
    return _write(tmp_path / "bad.npz", arrays)


def _wrong_ndim(tmp_path: Path) -> Path:
    arrays = _arrays((4, 4))
    arrays["test_images"] = arrays["test_images"].reshape(len(arrays["test_images"]), -1)
    return _write(tmp_path / "bad.npz", arrays)


def _not_a_zip(tmp_path: Path) -> Path:
    path = tmp_path / "bad.npz"
    path.write_bytes(os.urandom(256))
    return path


def _no_image_keys(tmp_path: Path) -> Path:
    return _write(tmp_path / "bad.npz", {"x": np.zeros(3), "y": np.ones(3)})


def _count_mismatch(tmp_path: Path) -> Path:
    arrays = _arrays((4, 4))
    arrays["train_labels"] = arrays["train_labels"][:-1]
    return _write(tmp_path / "bad.npz", arrays)


def _multi_label(tmp_path: Path) -> Path:
    arrays = _arrays((4, 4))
    arrays["train_labels"] = np.zeros((SPLIT_SIZES["train"], 3), dtype=np.uint8)
    return _write(tmp_path / "bad.npz", arrays)


@pytest.mark.parametrize("make", [_missing_labels, _wrong_dtype, _wrong_ndim, _not_a_zip, _no_image_keys,
                                  _count_mismatch, _multi_label])
def test_bad_files_raise_user_error_naming_the_file(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(UserError) as info:
        load_npz(path)
    assert str(path) in str(info.value)
    assert "\n" not in info.value.line()


def test_missing_labels_error_names_the_split(tmp_path):
    with pytest.raises(UserError, match="val_labels"):
        load_npz(_missing_labels(tmp_path))


# Files a user may well pass by mistake. Each must be a UserError (one stderr line), not a traceback.

def _empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    return path


def _npy_named_npz(tmp_path: Path) -> Path:
    path = tmp_path / "array.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.zeros((3, 4, 4), dtype=np.uint8))
    return path


def _object_array_member(tmp_path: Path) -> Path:
    arrays = _arrays((4, 4))
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((2, 2), np.uint8), np.zeros((3, 3), np.uint8)
    arrays["train_images"], arrays["train_labels"] = ragged, np.zeros((2, 1), np.uint8)
    return _write(tmp_path / "ragged.npz", arrays)


def _corrupt_member(tmp_path: Path) -> Path:
    path = _write(tmp_path / "corrupt.npz", _arrays((16, 16)))
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("train_images.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 128  # inside the member's array bytes
    data[start:start + 64] = bytes(255 - b for b in data[start:start + 64])
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("make", [_empty_file, _npy_named_npz, _object_array_member, _corrupt_member])
def test_unreadable_npz_variants_raise_user_error(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(UserError) as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_real_breastmnist_keeps_official_split_counts(shared_data):
    table = load_npz(shared_data / "medmnist" / "breastmnist.npz")
    counts = table.frame["split"].value_counts().to_dict()
    assert counts == {"train": 546, "val": 78, "test": 156}  # documented in ../shared/data/README.md
    assert table.classes == ["malignant", "normal, benign"]  # MedMNIST v2's names of labels 0 and 1
    first = table.pixels(0)
    assert first.dtype == np.uint8 and first.shape == (28, 28)
    with np.load(shared_data / "medmnist" / "breastmnist.npz") as raw:
        test_rows = table.frame.index[table.frame["split"] == "test"]
        np.testing.assert_array_equal(table.pixels(int(test_rows[-1])), raw["test_images"][-1])
        assert table.frame.loc[test_rows, "target"].tolist() == [int(v) for v in raw["test_labels"][:, 0]]


# ---- 2D validation: each bad array is one line naming the key, before any row is made --------------------------

def _with(key: str, value: np.ndarray, shape: tuple[int, ...] = (4, 4)) -> dict[str, np.ndarray]:
    arrays = _arrays(shape)
    arrays[key] = value
    return arrays


def _train_labels(values: list, dtype) -> np.ndarray:
    return np.array(values, dtype=dtype).reshape(-1, 1)


N_TRAIN = SPLIT_SIZES["train"]
BAD_2D = {
    "text-labels": (_with("train_labels", _train_labels(["a", "b"] * 3 + ["a"], "<U1")), "holds text"),
    "fractional-labels": (_with("train_labels", _train_labels([0, 0.5, 1, 0, 1, 0, 1], np.float32)), "0.5"),
    "nan-labels": (_with("train_labels", _train_labels([0, np.nan, 1, 0, 1, 0, 1], np.float64)), "not whole"),
    "negative-labels": (_with("train_labels", _train_labels([0, -1, 1, 0, 1, 0, 1], np.int64)), "negative label"),
    "complex-labels": (_with("train_labels", _train_labels([0, 1, 1, 0, 1, 0, 1], np.complex64)), "complex64"),
    "scalar-labels": (_with("train_labels", np.array(1, np.uint8)), "single value"),
    "two-channels": (_with("train_images", np.zeros((N_TRAIN, 8, 8, 2), np.uint8)), "not 2"),
    "channels-first": (_with("train_images", np.zeros((N_TRAIN, 3, 8, 8), np.uint8)), "np.moveaxis"),
    "zero-rows": ({**_arrays((4, 4)), "test_images": np.zeros((0, 4, 4), np.uint8),
                   "test_labels": np.zeros((0, 1), np.uint8)}, "test_images holds 0 images"),
    "zero-size-images": (_with("train_images", np.zeros((N_TRAIN, 0, 4), np.uint8)), "zero size"),
    "labels-too-few": (_with("val_labels", np.zeros((2, 1), np.uint8)), "3 images but 2 labels"),
}


@pytest.mark.parametrize("case", list(BAD_2D), ids=list(BAD_2D))
def test_bad_2d_arrays_are_refused_with_one_line(tmp_path, case):
    arrays, mention = BAD_2D[case]
    path = _write(tmp_path / "bad.npz", arrays)
    with pytest.raises(UserError) as info:
        load_npz(path)
    line = info.value.line()
    assert line.startswith(f"{path}:") and mention in line and "\n" not in line


class _Trap:
    """Unpickling this object creates a file: the proof that a loader unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("key", ["train_labels", "train_images"])
def test_object_arrays_are_refused_without_unpickling(tmp_path, key):
    marker = tmp_path / "unpickled"
    trap = np.empty(N_TRAIN, dtype=object)
    trap[:] = [_Trap(marker) for _ in range(N_TRAIN)]
    path = _write(tmp_path / "pickle.npz", _with(key, trap))
    assert not marker.exists()
    with pytest.raises(UserError) as info:
        load_npz(path)
    assert f"{key} is an object array" in info.value.line()
    assert not marker.exists()


@pytest.mark.parametrize("labels", [
    _train_labels([0, 1, 1, 0, 1, 0, 1], np.float64),  # whole numbers saved as float: accepted
    np.array([0, 1, 1, 0, 1, 0, 1], np.int32),  # (N,) rather than (N, 1)
    _train_labels([False, True, True, False, True, False, True], bool),
], ids=["float-whole", "flat", "bool"])
def test_whole_number_labels_of_other_dtypes_are_read_as_classes(tmp_path, labels):
    table = load_npz(_write(tmp_path / "ok.npz", _with("train_labels", labels)))
    train = table.frame[table.frame["split"] == "train"]
    assert train["label"].tolist() == ["0", "1", "1", "0", "1", "0", "1"]
    assert table.classes == ["0", "1"]


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_grey_and_rgb_are_2d_images(tmp_path, channels):
    table = load_npz(_write(tmp_path / "c.npz", _arrays((8, 8, channels))))
    assert table.pixels(0).shape == (8, 8, channels)
    assert table.layout == "MedMNIST .npz of 2D images, with the file's own splits (train, val, test)"
