"""CSV manifests: chosen columns, errors that name the column or line, and HAM10000 metadata as shipped."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtransfer.data.manifest import ManifestColumns, load_manifest
from medtransfer.errors import UserError


def _image(path: Path, value: int = 0, rgb: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (9, 7, 3) if rgb else (9, 7)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)
    return path


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


CUSTOM_ROWS = [
    ["scans/p1/a.png", "effusion", "P1", "Train"],
    ["scans/p1/b.png", "effusion", "P1", "train"],
    ["scans/p2/c.png", "normal", "P2", "VAL"],
    ["scans/p3/d.png", "normal", "P3", "test"],
    ["scans/p4/e.png", "effusion", "P4", "test"],
]
CUSTOM_HEADER = ["file", "diagnosis", "patient", "fold"]
CUSTOM_COLUMNS = ManifestColumns(path="file", label="diagnosis", group="patient", split="fold")


def _custom(tmp_path: Path, rows=CUSTOM_ROWS, header=CUSTOM_HEADER, image_dir: Path | None = None) -> Path:
    for k, row in enumerate(rows):
        _image((image_dir or tmp_path) / row[0], value=10 * k)
    return _csv(tmp_path / "manifest.csv", header, rows)


def test_custom_columns_give_labels_groups_and_splits(tmp_path):
    table = load_manifest(_custom(tmp_path), CUSTOM_COLUMNS, None, skip_missing=False)
    frame = table.frame
    assert frame["sample_id"].tolist() == [r[0] for r in CUSTOM_ROWS]
    assert frame["label"].tolist() == [r[1] for r in CUSTOM_ROWS]
    assert frame["group"].tolist() == [r[2] for r in CUSTOM_ROWS]
    assert frame["split"].tolist() == [r[3].lower() for r in CUSTOM_ROWS]
    assert table.classes == ["effusion", "normal"]
    assert [Path(p) for p in frame["ref"]] == [tmp_path / r[0] for r in CUSTOM_ROWS]
    for k in range(len(table)):
        assert int(table.pixels(k)[0, 0]) == 10 * k
    assert table.notes == []


def test_image_root_option(tmp_path):
    images = tmp_path / "images"
    (tmp_path / "csvs").mkdir()
    _custom(tmp_path, image_dir=images)
    csv_path = (tmp_path / "manifest.csv").rename(tmp_path / "csvs" / "manifest.csv")  # images not under its folder
    table = load_manifest(csv_path, CUSTOM_COLUMNS, images, skip_missing=False)
    assert all(Path(p).is_relative_to(images) for p in table.frame["ref"])
    with pytest.raises(UserError, match="not found"):
        load_manifest(csv_path, CUSTOM_COLUMNS, None, skip_missing=False)
    with pytest.raises(UserError, match="not a folder"):
        load_manifest(csv_path, CUSTOM_COLUMNS, tmp_path / "nope", skip_missing=False)


def test_default_columns_are_path_and_label(tmp_path):
    rows = [["x/1.png", "a"], ["x/2.png", "b"]]
    for row in rows:
        _image(tmp_path / row[0])
    table = load_manifest(_csv(tmp_path / "m.csv", ["path", "label"], rows), ManifestColumns(), None, False)
    assert table.frame["label"].tolist() == ["a", "b"]
    assert not table.has_groups
    assert table.frame["split"].isna().all()


@pytest.mark.parametrize("columns, option, name", [
    (ManifestColumns(path="file", label="dx", group="patient", split="fold"), "--label-col", "dx"),
    (ManifestColumns(path="file", label="diagnosis", group="lesion", split="fold"), "--group-col", "lesion"),
    (ManifestColumns(path="image", label="diagnosis", group="patient"), "--path-col", "image"),
])
def test_unknown_column_lists_the_columns(tmp_path, columns, option, name):
    with pytest.raises(UserError) as info:
        load_manifest(_custom(tmp_path), columns, None, False)
    line = info.value.line()
    assert option in line and repr(name) in line
    for column in CUSTOM_HEADER:
        assert column in line


def test_empty_label_names_the_line(tmp_path):
    rows = [list(r) for r in CUSTOM_ROWS]
    blank = 3
    rows[blank][1] = ""
    with pytest.raises(UserError) as info:
        load_manifest(_custom(tmp_path, rows=rows), CUSTOM_COLUMNS, None, False)
    csv_line = blank + 2  # line 1 is the header, data lines count from 2
    assert f"line {csv_line}" in info.value.line()
    assert "1 row(s)" in info.value.line()


def test_bad_split_value(tmp_path):
    rows = [list(r) for r in CUSTOM_ROWS]
    rows[2][3] = "holdout"
    with pytest.raises(UserError, match="holdout"):
        load_manifest(_custom(tmp_path, rows=rows), CUSTOM_COLUMNS, None, False)


def test_missing_images_error_or_skip(tmp_path):
    csv_path = _custom(tmp_path)
    gone = tmp_path / CUSTOM_ROWS[2][0]
    gone.unlink()
    with pytest.raises(UserError) as info:
        load_manifest(csv_path, CUSTOM_COLUMNS, None, skip_missing=False)
    assert CUSTOM_ROWS[2][0] in info.value.line() and "--skip-missing" in info.value.line()
    table = load_manifest(csv_path, CUSTOM_COLUMNS, None, skip_missing=True)
    assert len(table) == len(CUSTOM_ROWS) - 1
    assert CUSTOM_ROWS[2][0] not in set(table.frame["sample_id"])
    assert any(f"1 of {len(CUSTOM_ROWS)}" in note for note in table.notes)


def test_unreadable_image_in_manifest_is_named(tmp_path):
    csv_path = _custom(tmp_path)
    broken = tmp_path / CUSTOM_ROWS[1][0]
    broken.write_bytes(os.urandom(500))
    with pytest.raises(UserError) as info:
        load_manifest(csv_path, CUSTOM_COLUMNS, None, False)
    assert str(broken) in info.value.line()


@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe\x89PNG\r\n" + bytes(range(256)) * 4])
def test_unreadable_csv_is_user_error(tmp_path, content):
    path = tmp_path / "m.csv"
    path.write_bytes(content)
    with pytest.raises(UserError):
        load_manifest(path, ManifestColumns(), None, False)


def test_duplicate_rows_are_rejected(tmp_path):
    rows = CUSTOM_ROWS + [CUSTOM_ROWS[0]]
    with pytest.raises(UserError, match="twice"):
        load_manifest(_custom(tmp_path, rows=rows), CUSTOM_COLUMNS, None, False)


def test_bare_file_names_are_found_in_subfolders(tmp_path):
    _image(tmp_path / "batch1" / "a.png", 1)
    _image(tmp_path / "batch2" / "deep" / "b.png", 2)
    csv_path = _csv(tmp_path / "m.csv", ["path", "label"], [["a.png", "x"], ["b.png", "y"]])
    table = load_manifest(csv_path, ManifestColumns(), None, skip_missing=False)
    expected = [tmp_path / "batch1" / "a.png", tmp_path / "batch2" / "deep" / "b.png"]
    assert [Path(p) for p in table.frame["ref"]] == expected
    assert [int(table.pixels(k)[0, 0]) for k in range(2)] == [1, 2]


def test_a_missing_image_is_not_replaced_by_a_same_named_file_elsewhere(tmp_path):
    """A row naming NORMAL/x.png must not silently read PNEUMONIA/x.png (wrong label, one file twice)."""
    _image(tmp_path / "PNEUMONIA" / "x.png", 200)
    _image(tmp_path / "PNEUMONIA" / "y.png", 100)
    _image(tmp_path / "NORMAL" / "z.png", 10)
    rows = [["PNEUMONIA/x.png", "pneumonia"], ["PNEUMONIA/y.png", "pneumonia"],
            ["NORMAL/z.png", "normal"], ["NORMAL/x.png", "normal"]]  # the last image does not exist
    csv_path = _csv(tmp_path / "m.csv", ["path", "label"], rows)
    with pytest.raises(UserError, match="NORMAL/x.png"):
        load_manifest(csv_path, ManifestColumns(), None, skip_missing=False)
    table = load_manifest(csv_path, ManifestColumns(), None, skip_missing=True)
    assert not table.frame["ref"].duplicated().any()
    assert "NORMAL/x.png" not in set(table.frame["sample_id"])


# --- HAM10000 -------------------------------------------------------------------------------------------------

HAM_HEADER = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]


def test_ham_layout_with_two_part_folders_found_by_name(tmp_path):
    rows = [
        ["HAM_0000001", "ISIC_0000001", "nv", "histo", "40.0", "male", "back"],
        ["HAM_0000001", "ISIC_0000002", "nv", "histo", "40.0", "male", "back"],
        ["HAM_0000002", "ISIC_0000003", "mel", "histo", "55.0", "female", "face"],
        ["HAM_0000003", "ISIC_0000004", "bkl", "consensus", "", "unknown", "trunk"],
    ]
    parts = {"ISIC_0000001": "HAM10000_images_part_1", "ISIC_0000002": "HAM10000_images_part_2",
             "ISIC_0000003": "HAM10000_images_part_1", "ISIC_0000004": "HAM10000_images_part_2"}
    for k, (image_id, part) in enumerate(parts.items()):
        _image(tmp_path / part / f"{image_id}.jpg", value=40 * k, rgb=True)
    csv_path = _csv(tmp_path / "HAM10000_metadata.csv", HAM_HEADER, rows)

    table = load_manifest(csv_path, ManifestColumns(), None, skip_missing=False)
    assert table.frame["sample_id"].tolist() == [r[1] for r in rows]
    assert table.frame["label"].tolist() == [r[2] for r in rows]
    assert table.frame["group"].tolist() == [r[0] for r in rows]
    for ref, image_id in zip(table.frame["ref"], table.frame["sample_id"]):
        assert Path(ref) == tmp_path / parts[image_id] / f"{image_id}.jpg"
    assert table.pixels(0).shape == (9, 7, 3)


def test_chosen_columns_turn_ham_detection_off(tmp_path):
    rows = [["HAM_1", "ISIC_1", "nv"], ["HAM_2", "ISIC_2", "mel"]]
    for row in rows:
        _image(tmp_path / f"{row[1]}.jpg")
    csv_path = _csv(tmp_path / "meta.csv", ["lesion_id", "image_id", "dx"], rows)
    table = load_manifest(csv_path, ManifestColumns(path="image_id", label="lesion_id"), None, False)
    assert table.frame["label"].tolist() == ["HAM_1", "HAM_2"]
    assert not table.has_groups


def test_real_ham_subset_is_detected(shared_data):
    csv_path = shared_data / "ham10000_subset" / "subset_metadata.csv"
    raw = pd.read_csv(csv_path, dtype=str)
    table = load_manifest(csv_path, ManifestColumns(), None, skip_missing=False)

    assert len(table) == len(raw) == 124
    by_id = raw.set_index("image_id")
    assert table.frame["label"].tolist() == by_id.loc[table.frame["sample_id"], "dx"].tolist()
    assert table.frame["group"].tolist() == by_id.loc[table.frame["sample_id"], "lesion_id"].tolist()
    assert table.frame["group"].nunique() == 123
    assert table.classes == sorted(raw["dx"].unique())
    assert len(table.classes) == 7
    assert all(Path(ref).parent.name == "HAM10000_images" for ref in table.frame["ref"])
    assert table.notes == []


def test_real_full_ham_metadata_needs_skip_missing(shared_data):
    folder = shared_data / "ham10000_subset"
    csv_path = folder / "HAM10000_metadata.csv"
    with pytest.raises(UserError) as info:
        load_manifest(csv_path, ManifestColumns(), None, skip_missing=False)
    assert "--skip-missing" in info.value.line()

    table = load_manifest(csv_path, ManifestColumns(), None, skip_missing=True)
    present = {p.stem for p in (folder / "HAM10000_images").glob("*.jpg")}
    total = len(pd.read_csv(csv_path, usecols=["image_id"]))
    assert len(table) == len(present) == 124
    assert set(table.frame["sample_id"]) == present
    skipped = total - len(present)
    assert skipped == 9891
    assert any(f"{skipped} of {total}" in note for note in table.notes)


@pytest.mark.parametrize("blank", ["", "  "], ids=["empty", "spaces"])
def test_blank_group_cells_are_refused_naming_the_rows(tmp_path, blank):
    rows = [list(r) for r in CUSTOM_ROWS]
    rows[1][2] = rows[3][2] = blank  # --group-col given, but two rows name no patient
    with pytest.raises(UserError) as info:
        load_manifest(_custom(tmp_path, rows=rows), CUSTOM_COLUMNS, None, False)
    line = info.value.line()
    assert "\n" not in line
    assert "2 of 5 samples have a blank group id" in line
    assert f"(first: {rows[1][0]!r}, {rows[3][0]!r})" in line
    assert "--group-col" in line and str(tmp_path / "manifest.csv") in line


def test_an_all_blank_group_column_means_no_groups(tmp_path):
    rows = [[r[0], r[1], "", r[3]] for r in CUSTOM_ROWS]
    table = load_manifest(_custom(tmp_path, rows=rows), CUSTOM_COLUMNS, None, False)
    assert not table.has_groups


# --- refused with one line naming the line ----------------------------------------------------------------------


def _refused(csv_path: Path, columns: ManifestColumns = ManifestColumns(), root: Path | None = None) -> str:
    with pytest.raises(UserError) as info:
        load_manifest(csv_path, columns, root, False)
    line = info.value.line()
    assert "\n" not in line and line.startswith(str(csv_path))
    return line


def _plain(tmp_path: Path, rows: list[list[str]], header=("path", "label")) -> Path:
    for k, row in enumerate(rows):
        target = tmp_path / row[0]
        if not target.exists() and ".." not in row[0] and not os.path.isabs(row[0]):
            _image(target, value=k)
    return _csv(tmp_path / "m.csv", list(header), rows)


def test_non_utf8_bytes_name_their_offset_line_and_the_fix(tmp_path):
    _image(tmp_path / "a.png")
    path = tmp_path / "m.csv"
    text = "path,label\na.png,caf\xe9\n"
    path.write_bytes(text.encode("latin-1"))
    line = _refused(path)
    offset = text.index("\xe9")
    assert f"byte 0xe9 at offset {offset} (line 2)" in line and "UTF-8" in line and "iconv" in line


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png", 50)
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xef\xbb\xbfpath,label\na.png,x\nb.png,y\n")
    table = load_manifest(path, ManifestColumns(), None, False)
    assert table.frame["label"].tolist() == ["x", "y"]


@pytest.mark.parametrize("escape", ["../outside.png", "sub/../../outside.png", "ABSOLUTE"])
def test_paths_that_leave_the_image_root_are_refused_even_when_the_file_exists(tmp_path, escape):
    root = tmp_path / "root"
    _image(tmp_path / "outside.png")
    name = str(tmp_path / "outside.png") if escape == "ABSOLUTE" else escape
    rows = [["a.png", "x"], [name, "y"]]
    _image(root / "a.png")
    line = _refused(_csv(root / "m.csv", ["path", "label"], rows))
    assert "1 row(s) name images outside the image root" in line and repr(name) in line and "line 3" in line


def test_absolute_paths_inside_the_root_and_links_to_elsewhere_are_fine(tmp_path):
    root = tmp_path / "root"
    _image(root / "a.png", 10)
    _image(tmp_path / "disk2" / "b.png", 20)
    (root / "b.png").symlink_to(tmp_path / "disk2" / "b.png")  # images linked in from another disk
    rows = [[str(root / "a.png"), "x"], ["b.png", "y"]]
    table = load_manifest(_csv(root / "m.csv", ["path", "label"], rows), ManifestColumns(), None, False)
    assert [int(table.pixels(k)[0, 0]) for k in range(2)] == [10, 20]


def test_one_image_listed_twice_names_both_lines_and_the_label_conflict(tmp_path):
    rows = [["a.png", "x"], ["b.png", "y"], ["./a.png", "y"]]
    line = _refused(_plain(tmp_path, rows))
    assert "'a.png' is listed twice (lines 2 and 4, with labels 'x' and 'y'" in line


@pytest.mark.parametrize("first, second, column", [("b", "b ", "label"), ("normal", "Normal", "label"),
                                                   ("P1", " P1", "patient")])
def test_values_differing_only_by_whitespace_or_case_are_refused(tmp_path, first, second, column):
    rows = [["a.png", "a", "P0"], ["b.png", "b", "P1"], ["c.png", "normal", "P2"], ["d.png", "a", "P3"]]
    at = {"label": 1, "patient": 2}[column]
    target = next(k for k, r in enumerate(rows) if r[at] == first)
    rows[3][at] = second
    path = _plain(tmp_path, rows, header=("path", "label", "patient"))
    line = _refused(path, ManifestColumns(group="patient"))
    assert f"{first!r} and {second!r}" in line and f"lines {target + 2} and 5" in line and repr(column) in line


def test_a_label_with_spaces_but_no_twin_is_kept(tmp_path):
    table = load_manifest(_plain(tmp_path, [["a.png", "a"], ["b.png", " b "]]), ManifestColumns(), None, False)
    assert table.classes == [" b ", "a"]


def test_split_values_in_the_folder_spellings_are_understood(tmp_path):
    rows = [["a.png", "x", "Training"], ["b.png", "y", "valid"], ["c.png", "x", " TEST "], ["d.png", "y", "dev"]]
    table = load_manifest(_plain(tmp_path, rows, header=("path", "label", "fold")),
                          ManifestColumns(split="fold"), None, False)
    assert table.frame["split"].tolist() == ["train", "val", "test", "val"]


def test_unknown_split_values_are_listed_with_their_line(tmp_path):
    rows = [["a.png", "x", "train"], ["b.png", "y", "holdout"], ["c.png", "x", "test"], ["d.png", "y", "extra"]]
    line = _refused(_plain(tmp_path, rows, header=("path", "label", "fold")), ManifestColumns(split="fold"))
    assert "['extra', 'holdout'] in 2 row(s) (first at line 3)" in line and "train, val or test" in line


def test_a_split_column_blank_in_some_rows_names_the_first(tmp_path):
    rows = [["a.png", "x", "train"], ["b.png", "y", ""], ["c.png", "x", "test"]]
    line = _refused(_plain(tmp_path, rows, header=("path", "label", "fold")), ManifestColumns(split="fold"))
    assert "1 row(s) have no 'fold' split while others do (first at line 3)" in line


def test_a_row_with_no_path_names_its_line(tmp_path):
    rows = [["a.png", "x"], ["", "y"]]
    _image(tmp_path / "a.png")
    assert "no 'path' image path (first at line 3)" in _refused(_csv(tmp_path / "m.csv", ["path", "label"], rows))


def _ham_with_split(tmp_path: Path, split: str = "split") -> Path:
    rows = [["HAM_1", "ISIC_1", "nv", "train"], ["HAM_2", "ISIC_2", "mel", "train"],
            ["HAM_3", "ISIC_3", "nv", "test"], ["HAM_4", "ISIC_4", "mel", "test"]]
    for k, row in enumerate(rows):
        _image(tmp_path / "HAM10000_images" / f"{row[1]}.jpg", value=30 * k)
    return _csv(tmp_path / "ham.csv", ["lesion_id", "image_id", "dx", split], rows)


@pytest.mark.parametrize("name", ["split", "Split"])
def test_a_ham_split_column_is_not_silently_ignored(tmp_path, name):
    path = _ham_with_split(tmp_path, name)
    line = _refused(path)
    assert "HAM10000 columns were detected" in line and f"--split-col {name}" in line
    table = load_manifest(path, ManifestColumns(path="image_id", label="dx", group="lesion_id", split=name), None,
                          False)
    assert table.frame["split"].tolist() == ["train", "train", "test", "test"]


def test_a_split_column_beside_chosen_columns_is_not_silently_ignored(tmp_path):
    rows = [["a.png", "x", "train"], ["b.png", "y", "test"]]
    line = _refused(_plain(tmp_path, rows, header=("file", "dx", "partition")), ManifestColumns("file", "dx"))
    assert "'partition'" in line and "--split-col partition" in line and "HAM10000" not in line
