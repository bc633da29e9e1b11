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


# ---- split folders: by name, by structure, by --split-dirs; never as classes ---------------------------------

BRAIN = {"glioma": 3, "meningioma": 2, "notumor": 3, "pituitary": 2}


def _split_tree(root: Path, folders: dict[str, dict[str, int]]) -> Path:
    """ROOT/<folder>/<class>/img_k.png for each folder name given."""
    rng = np.random.default_rng(4)
    for folder, per_class in folders.items():
        for cls, n in per_class.items():
            for i in range(n):
                _save(root / folder / cls / f"img_{i}.png", rng)
    return root


def test_kaggle_training_testing_folders_are_splits_not_classes(tmp_path):
    _split_tree(tmp_path, {"Training": BRAIN, "Testing": {c: 1 for c in BRAIN}})
    table = load_folder(tmp_path)
    assert table.classes == sorted(BRAIN)
    assert table.frame["split"].value_counts().to_dict() == {"train": sum(BRAIN.values()), "test": len(BRAIN)}
    assert (table.frame.loc[table.frame["split"] == "train", "sample_id"].str.startswith("Training/")).all()
    assert table.layout == "split folders Training→train, Testing→test (recognised by name); 4 class folders"
    assert table.notes == []


@pytest.mark.parametrize(("names", "splits"), [
    (("TRAINING", "Dev", "Test_Set"), ("train", "val", "test")),
    (("train_set", "valid", "testing"), ("train", "val", "test")),
    (("Train", "Validation"), ("train", "val")),
])
def test_every_split_alias_in_any_case(tmp_path, names, splits):
    _split_tree(tmp_path, {name: {"a": 2, "b": 2} for name in names})
    table = load_folder(tmp_path)
    assert set(table.frame["split"]) == set(splits)
    assert table.classes == ["a", "b"]


def test_same_class_folders_under_unrecognised_names_are_refused_with_the_hint(tmp_path):
    _split_tree(tmp_path, {"A_part": BRAIN, "B_part": BRAIN})
    with pytest.raises(UserError) as info:
        load_folder(tmp_path)
    line = info.value.line()
    assert "--split-dirs train=NAME,test=NAME" in line
    assert "A_part, B_part" in line and "glioma, meningioma, notumor, pituitary" in line
    assert "\n" not in line


def test_split_dirs_map_unrecognised_folders(tmp_path):
    _split_tree(tmp_path, {"A_part": BRAIN, "B_part": {c: 1 for c in BRAIN}})
    table = load_folder(tmp_path, {"train": "A_part", "test": "B_part"})
    assert table.frame["split"].value_counts().to_dict() == {"train": sum(BRAIN.values()), "test": len(BRAIN)}
    assert table.classes == sorted(BRAIN)
    assert table.layout == "split folders A_part→train, B_part→test (given by --split-dirs); 4 class folders"


def test_split_dirs_override_recognised_names_and_match_case_insensitively(tmp_path):
    _split_tree(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    table = load_folder(tmp_path, {"train": "TRAIN", "test": "val"})  # the user's val folder is their test set
    assert table.frame["split"].value_counts().to_dict() == {"train": 4, "test": 2}


@pytest.mark.parametrize(("mapping", "mention"), [
    ({"train": "A_part", "test": "C_part"}, "'C_part'"),  # no such folder: the folders found are listed
    ({"train": "A_part"}, "'B_part' in"),  # a folder left unmapped is refused, not silently dropped
    ({"train": "A_part", "val": "B_part", "test": "B_part"}, "both val and test"),
])
def test_bad_split_dirs_are_one_line(tmp_path, mapping, mention):
    _split_tree(tmp_path, {"A_part": {"a": 2, "b": 2}, "B_part": {"a": 1, "b": 1}})
    with pytest.raises(UserError) as info:
        load_folder(tmp_path, mapping)
    line = info.value.line()
    assert mention in line and line.startswith("--split-dirs")
    if "C_part" in mention:
        assert "A_part, B_part" in line


def test_two_folders_naming_one_split_are_refused(tmp_path):
    _split_tree(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}, "validation": {"a": 1, "b": 1}})
    with pytest.raises(UserError, match="'val' and 'validation' both name the val split"):
        load_folder(tmp_path)


def test_a_folder_beside_split_folders_is_refused_not_ignored(tmp_path):
    _split_tree(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}, "extra": {"a": 1}})
    with pytest.raises(UserError, match="'extra' sits beside the split folders") as info:
        load_folder(tmp_path)
    assert "--split-dirs" in info.value.line()


def test_macos_archive_junk_is_neither_a_class_nor_a_split(tmp_path):
    _split_tree(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    junk = tmp_path / "__MACOSX" / "train" / "a"
    junk.mkdir(parents=True)
    (junk / "._img_0.png").write_bytes(os.urandom(64))
    _save(tmp_path / "__MACOSX" / "stray.png", np.random.default_rng(5))
    table = load_folder(tmp_path)
    assert len(table) == 6 and table.classes == ["a", "b"]


@pytest.mark.parametrize("inside", ["", "train"], ids=["plain", "in-a-split"])
def test_an_empty_class_folder_beside_good_ones_is_refused(tmp_path, inside):
    layout = {"a": 2, "b": 2}
    _split_tree(tmp_path, {"train": layout, "test": layout} if inside else {".": layout})
    empty = tmp_path / inside / "c"
    empty.mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(UserError) as info:
        load_folder(tmp_path)
    line = info.value.line()
    assert line.startswith(f"{empty}: is an empty class folder") and "2 class folders" in line


@pytest.mark.parametrize("where", ["", "train"], ids=["root-beside-classes", "split-beside-classes"])
def test_images_loose_beside_class_folders_are_refused(tmp_path, where):
    layout = {"a": 2, "b": 2}
    _split_tree(tmp_path, {"train": layout, "test": layout} if where else {".": layout})
    _save(tmp_path / where / "loose.png", np.random.default_rng(6))
    with pytest.raises(UserError) as info:
        load_folder(tmp_path)
    assert "loose.png" in info.value.line() and "beside 2 class folders" in info.value.line()


def test_images_loose_beside_split_folders_are_refused(tmp_path):
    _split_tree(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    _save(tmp_path / "stray.png", np.random.default_rng(7))
    with pytest.raises(UserError, match="stray.png.*beside the split folders"):
        load_folder(tmp_path)


def test_images_without_any_class_folder_are_refused(tmp_path):
    for i in range(3):
        _save(tmp_path / f"img{i}.png", np.random.default_rng(i))
    with pytest.raises(UserError, match="3 image\\(s\\) directly .* and no class folders"):
        load_folder(tmp_path)


def test_plain_class_folders_describe_their_layout(tmp_path):
    _split_tree(tmp_path, {".": {"benign": 2, "malignant": 2}})
    table = load_folder(tmp_path)
    assert table.layout == "2 class folders, no split folders (splits will be carved)"
    assert table.frame["split"].isna().all()


def test_classes_sharing_one_subfolder_name_stay_classes(tmp_path):
    # benign/images/*.png, malignant/images/*.png: a common class layout, not two split folders of one class
    _split_tree(tmp_path, {"benign": {"images": 2}, "malignant": {"images": 3}})
    table = load_folder(tmp_path)
    assert table.classes == ["benign", "malignant"] and table.notes == []


def test_classes_sharing_several_subfolders_unevenly_are_a_recorded_warning(tmp_path):
    # Not the same set (so not split folders by structure), but close enough that the user should be told.
    _split_tree(tmp_path, {"P1": {"x": 1, "y": 1, "z": 1}, "P2": {"x": 1, "y": 1}})
    table = load_folder(tmp_path)
    assert table.classes == ["P1", "P2"]
    assert len(table.notes) == 1 and "subfolders x, y" in table.notes[0] and "--split-dirs" in table.notes[0]
