"""Image folders: the Kaggle chest X-ray layout (train/val/test/<class>/) and plain class subfolders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtransfer.data.folder import load_folder
from medtransfer.errors import UserError

CLASSES = ("NORMAL", "PNEUMONIA")


def _save(path: Path, rng: np.random.Generator, rgb: bool = False, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if rgb else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def _kaggle_tree(root: Path, counts: dict[str, dict[str, int]], split_names: dict[str, str] | None = None) -> set[str]:
    """Write ROOT/<split>/<class>/*.jpeg (some nested, one RGB); return the relative paths written."""
    rng = np.random.default_rng(0)
    written = set()
    for split, per_class in counts.items():
        folder_name = (split_names or {}).get(split, split)
        for cls, n in per_class.items():
            for i in range(n):
                nested = "batch2/deeper/" if i % 3 == 2 else ""
                rel = f"{folder_name}/{cls}/{nested}person{i}_{split}.jpeg"
                _save(root / rel, rng, rgb=(i == 1))
                written.add(rel)
    return written


KAGGLE = {"train": {"NORMAL": 4, "PNEUMONIA": 5}, "val": {"NORMAL": 2, "PNEUMONIA": 2},
          "test": {"NORMAL": 3, "PNEUMONIA": 3}}


def test_kaggle_layout_uses_predefined_splits_and_nested_images(tmp_path):
    written = _kaggle_tree(tmp_path, KAGGLE)
    table = load_folder(tmp_path)

    assert set(table.frame["sample_id"]) == written
    assert table.classes == sorted(CLASSES)
    for split, per_class in KAGGLE.items():
        part = table.frame[table.frame["split"] == split]
        assert part["label"].value_counts().to_dict() == per_class
        # the class is the folder directly under the split, however deep the image sits
        assert all(sid.split("/")[1] == label for sid, label in zip(part["sample_id"], part["label"]))
    assert table.frame["sample_id"].str.contains("/batch2/deeper/").any()
    assert not table.has_groups


def test_grey_and_rgb_images_read_with_their_channels(tmp_path):
    _kaggle_tree(tmp_path, KAGGLE)
    table = load_folder(tmp_path)
    shapes = {table.frame["sample_id"].iat[i]: table.pixels(i).shape for i in range(len(table))}
    for sid, shape in shapes.items():
        expected = (10, 12, 3) if Path(sid).name.startswith("person1_") else (10, 12)
        assert shape == expected, sid


def test_split_folder_aliases_and_case(tmp_path):
    _kaggle_tree(tmp_path, KAGGLE, split_names={"train": "Train", "val": "validation", "test": "TEST"})
    table = load_folder(tmp_path)
    assert table.frame["split"].value_counts().to_dict() == {s: sum(c.values()) for s, c in KAGGLE.items()}


def test_plain_class_folders_have_no_split(tmp_path):
    rng = np.random.default_rng(1)
    for cls, n in {"benign": 3, "malignant": 4}.items():
        for i in range(n):
            _save(tmp_path / cls / f"img{i}.png", rng)
    _save(tmp_path / "malignant" / "sub" / "img_nested.png", rng)
    table = load_folder(tmp_path)
    assert table.frame["split"].isna().all()
    assert table.frame["label"].value_counts().to_dict() == {"benign": 3, "malignant": 5}
    assert table.classes == ["benign", "malignant"]


def test_non_images_and_hidden_files_are_ignored(tmp_path):
    rng = np.random.default_rng(2)
    _save(tmp_path / "a" / "one.png", rng)
    _save(tmp_path / "b" / "two.png", rng)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "._one.png").write_bytes(os.urandom(64))  # macOS resource fork
    (tmp_path / "b" / ".DS_Store").write_bytes(os.urandom(64))
    _save(tmp_path / ".hidden_class" / "three.png", rng)
    table = load_folder(tmp_path)
    assert sorted(table.frame["sample_id"]) == ["a/one.png", "b/two.png"]


def test_pixels_match_the_file(tmp_path):
    rng = np.random.default_rng(3)
    path = _save(tmp_path / "x" / "exact.png", rng)
    _save(tmp_path / "y" / "other.png", rng)
    table = load_folder(tmp_path)
    row = int(np.flatnonzero(table.frame["sample_id"] == "x/exact.png")[0])
    np.testing.assert_array_equal(table.pixels(row), np.asarray(Image.open(path)))


def test_corrupt_image_in_a_class_folder_is_named(tmp_path):
    _kaggle_tree(tmp_path, KAGGLE)
    bad = tmp_path / "train" / "PNEUMONIA" / "x.jpeg"  # sorts between person*.jpeg files
    bad.write_bytes(os.urandom(2048))
    with pytest.raises(UserError) as info:
        load_folder(tmp_path)
    assert str(bad) in info.value.line()
    assert "more" not in info.value.line()


def test_several_corrupt_images_report_the_first_and_the_count(tmp_path):
    _kaggle_tree(tmp_path, KAGGLE)
    first = tmp_path / "test" / "NORMAL" / "a_bad.jpeg"
    second = tmp_path / "train" / "NORMAL" / "b_bad.jpeg"
    for path in (first, second):
        path.write_bytes(b"\xff\xd8 this is not a jpeg at all" * 10)
    with pytest.raises(UserError) as info:
        load_folder(tmp_path)
    line = info.value.line()
    assert (str(first) in line) or (str(second) in line)
    assert "1 more" in line


def test_empty_folder_raises(tmp_path):
    with pytest.raises(UserError, match="no images"):
        load_folder(tmp_path)


def test_class_folders_without_images_raise(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "NORMAL").mkdir(parents=True)
    (tmp_path / "train" / "NORMAL" / "readme.txt").write_text("x")
    with pytest.raises(UserError) as info:
        load_folder(tmp_path)
    assert str(tmp_path) in info.value.line()


def test_missing_path_raises(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        load_folder(tmp_path / "nope")


def test_fingerprint_changes_when_an_image_is_added(tmp_path):
    _kaggle_tree(tmp_path, KAGGLE)
    before = load_folder(tmp_path).fingerprint
    assert load_folder(tmp_path).fingerprint == before
    _save(tmp_path / "train" / "NORMAL" / "extra.jpeg", np.random.default_rng(9))
    assert load_folder(tmp_path).fingerprint != before
