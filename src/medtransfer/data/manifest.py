"""CSV manifests: one row per image, columns chosen by option; HAM10000 metadata recognised by its columns.

Refused with one line naming the line of the file: bytes that are not UTF-8, an image listed twice, a path that
leaves the image root, an unknown split value, labels (or group ids) that differ only by surrounding whitespace,
and a split column that would be left unused.
"""

from __future__ import annotations

import codecs
import io
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from medtransfer.data.folder import SPLIT_ALIASES
from medtransfer.data.images import FileReader, is_image, require_readable
from medtransfer.data.table import SampleTable, metadata_column
from medtransfer.errors import UserError
from medtransfer.hashing import files_fingerprint

HAM10000_COLUMNS = {"image_id", "dx", "lesion_id"}
# Column names (lower case) that say "predefined split": present but not chosen, they would be silently ignored.
SPLIT_COLUMN_NAMES = frozenset({"split", "splits", "partition"})
SPLIT_VALUES = "train, val or test (or training/train_set, valid/validation/dev, testing/test_set)"


@dataclass(frozen=True)
class ManifestColumns:
    """Which CSV columns hold the path, label, group and split, and which metadata columns the table keeps."""

    path: str = "path"
    label: str = "label"
    group: str | None = None
    split: str | None = None
    metadata: tuple[str, ...] = ()  # kept as `subgroup:<col>` columns, for subgroup analysis
    whole: bool = False  # an external set, read whole: a split column of its own does not matter


def detect_columns(header: list[str], given: ManifestColumns) -> tuple[ManifestColumns, bool]:
    """HAM10000 metadata (image_id, dx, lesion_id) is recognised unless the user chose other columns."""
    if HAM10000_COLUMNS <= set(header) and replace(given, metadata=(), whole=False) == ManifestColumns():
        return replace(given, path="image_id", label="dx", group="lesion_id"), True
    return given, False


def _line(index: object) -> int:
    return int(index) + 2  # the header line, and 1-based lines


def read_csv_text(csv_path: Path) -> pd.DataFrame:
    """The CSV as strings; bytes that are not UTF-8 are refused naming their offset and line (a BOM is fine)."""
    try:
        raw = csv_path.read_bytes()
    except OSError as exc:
        raise UserError(str(csv_path), f"cannot be read ({exc.strerror or exc})", "check the path") from None
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0  # Excel writes one: not a column name
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + bom
        line = raw[:offset].count(b"\n") + 1
        raise UserError(str(csv_path), f"byte 0x{raw[offset]:02x} at offset {offset} (line {line}) is not UTF-8 "
                        "(the file is probably Latin-1 or Windows-1252)", f"re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {csv_path.name} > "
                        f"{csv_path.stem}-utf8.csv") from None
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(str(csv_path), f"cannot read as CSV ({' '.join(str(exc).split())})",
                        "pass a comma-separated manifest") from None


def load_manifest(csv_path: Path, columns: ManifestColumns, image_root: Path | None, skip_missing: bool) -> SampleTable:
    """Load a CSV manifest into a SampleTable; missing images are an error unless skip_missing."""
    frame = read_csv_text(csv_path)
    columns, is_ham = detect_columns(list(frame.columns), columns)
    wanted = {"--path-col": columns.path, "--label-col": columns.label,
              "--group-col": columns.group, "--split-col": columns.split}
    unknown = [f"{opt} {col!r}" for opt, col in wanted.items() if col is not None and col not in frame.columns]
    unknown += [f"--subgroups {col!r}" for col in columns.metadata if col not in frame.columns]
    if unknown:
        raise UserError(str(csv_path), f"no column {', '.join(unknown)}; columns are {list(frame.columns)}",
                        "pick existing columns with --path-col/--label-col/--group-col/--split-col/--subgroups")
    _refuse_unused_split_column(csv_path, list(frame.columns), columns, is_ham)
    label = frame[columns.label].where(frame[columns.label].str.strip() != "")  # a blank cell is no label
    no_label = label.isna()
    if no_label.any():
        raise UserError(str(csv_path), f"{int(no_label.sum())} row(s) have no {columns.label!r} label (first at line "
                        f"{_line(no_label.idxmax())})", "fill in the label or drop the row")
    no_path = frame[columns.path].isna() | (frame[columns.path].str.strip() == "")
    if no_path.any():
        raise UserError(str(csv_path), f"{int(no_path.sum())} row(s) have no {columns.path!r} image path (first at "
                        f"line {_line(no_path.idxmax())})", "fill in the path or drop the row")
    _refuse_near_identical(csv_path, frame[columns.label], columns.label, casefold=True)
    if columns.group:
        _refuse_near_identical(csv_path, frame[columns.group].dropna(), columns.group, casefold=False)
    root = image_root or csv_path.parent
    if not root.is_dir():
        raise UserError(str(root), "image root is not a folder", "set --image-root to the folder holding the images")
    _refuse_escaping_paths(csv_path, frame[columns.path], root)
    paths = _resolve_paths(frame[columns.path], root, is_ham)
    missing = paths.isna()
    notes = []
    if missing.any():
        first = frame.loc[missing, columns.path].iloc[0]
        if not skip_missing:
            raise UserError(str(csv_path), f"{int(missing.sum())} of {len(frame)} rows name images not found under "
                            f"{root} (first: {first!r})", "fix --image-root, or pass --skip-missing to drop them")
        notes.append(f"skipped {int(missing.sum())} of {len(frame)} manifest rows whose image is missing")
    frame, paths = frame[~missing], paths[~missing]
    _refuse_listed_twice(csv_path, frame, paths, columns)
    split = _split_values(csv_path, frame[columns.split]) if columns.split else None
    table = pd.DataFrame({
        "sample_id": frame[columns.path].map(lambda p: Path(p).stem if is_ham else p).values,
        "label": frame[columns.label].values,
        "group": frame[columns.group].values if columns.group else None,
        "split": split.values if split is not None else None,
        "ref": paths.astype(str).values,
    } | {metadata_column(col): frame[col].values for col in columns.metadata})
    files = [Path(p) for p in table["ref"]]
    require_readable(files, str(csv_path))
    return SampleTable(table, FileReader(), str(csv_path), files_fingerprint(files, root), notes=notes)


def _refuse_unused_split_column(csv_path: Path, header: list[str], columns: ManifestColumns, detected: bool) -> None:
    """A column named like a split that is not --split-col would be dropped without a word: refuse instead."""
    if columns.split is not None or columns.whole:
        return
    unused = [c for c in header if c.strip().lower() in SPLIT_COLUMN_NAMES]
    if unused:
        how = "HAM10000 columns were detected (image_id, dx, lesion_id), but" if detected else "but"
        raise UserError(str(csv_path), f"has a column {unused[0]!r}, {how} no --split-col was given, so its splits "
                        "would be ignored", f"pass --split-col {unused[0]} to keep them, or remove the column to "
                        "have splits carved")


def _refuse_near_identical(csv_path: Path, values: pd.Series, column: str, casefold: bool) -> None:
    """'b ' beside 'b' (or 'B' beside 'b', for labels) is one class or patient spelled two ways, never two."""
    values = values[values.str.strip() != ""]  # blank cells are reported on their own
    distinct = pd.Series(values.unique())
    key = distinct.str.strip()
    key = key.str.casefold() if casefold else key
    clash = distinct[key.duplicated(keep=False)]
    if clash.empty:
        return
    first = clash[key[clash.index] == key[clash.index[0]]].tolist()
    lines = [_line(values.index[values == v][0]) for v in first[:2]]
    how = "surrounding whitespace or case" if casefold else "surrounding whitespace"
    raise UserError(str(csv_path), f"column {column!r} has values {' and '.join(repr(v) for v in first)} that differ "
                    f"only by {how} (lines {lines[0]} and {lines[1]})",
                    "spell each one identically in every row (strip the spaces)")


def _refuse_escaping_paths(csv_path: Path, names: pd.Series, root: Path) -> None:
    """Every image must lie inside the image root: `../../etc/passwd` or an absolute path elsewhere is refused.

    Checked on the path as written (normalised, symlinks not followed), so a root whose files are links to
    another disk still works.
    """
    base = os.path.abspath(root)
    inside = names.map(lambda n: os.path.normpath(os.path.join(base, n)).startswith(base.rstrip(os.sep) + os.sep))
    if not inside.all():
        first = names[~inside].iloc[0]
        raise UserError(str(csv_path), f"{int((~inside).sum())} row(s) name images outside the image root {root} "
                        f"(first: {first!r} at line {_line(names.index[~inside][0])})",
                        "give paths inside the image root, or set --image-root to a folder that holds them all")


def _refuse_listed_twice(csv_path: Path, frame: pd.DataFrame, paths: pd.Series, columns: ManifestColumns) -> None:
    """One image file named by two rows (also as `a/x.png` and `./a/x.png`) would be one sample counted twice."""
    key = paths.map(lambda p: os.path.normpath(os.path.abspath(p)))
    twice = key.duplicated(keep=False)
    if not twice.any():
        return
    lines = [_line(i) for i in key.index[key == key[twice].iloc[0]][:2]]
    labels = frame.loc[key.index[key == key[twice].iloc[0]], columns.label].unique()
    conflict = f", with labels {' and '.join(map(repr, labels))}" if len(labels) > 1 else ""
    raise UserError(str(csv_path), f"image {frame.loc[twice, columns.path].iloc[0]!r} is listed twice (lines "
                    f"{lines[0]} and {lines[1]}{conflict}; {int(twice.sum())} rows name an image listed more than "
                    "once)", "list every image once")


def _split_values(csv_path: Path, raw: pd.Series) -> pd.Series:
    """train/val/test from the split column; the folder aliases (Training, valid, dev, …) are understood."""
    clean = raw.str.strip().str.lower()
    split = clean.map(SPLIT_ALIASES)
    unknown = clean.notna() & split.isna()
    if unknown.any():
        values = sorted(raw[unknown].unique())
        raise UserError(str(csv_path), f"split column {raw.name!r} has value(s) {values[:5]} in {int(unknown.sum())} "
                        f"row(s) (first at line {_line(unknown.idxmax())})", f"use {SPLIT_VALUES}")
    blank = split.isna()
    if blank.any() and not blank.all():
        raise UserError(str(csv_path), f"{int(blank.sum())} row(s) have no {raw.name!r} split while others do (first "
                        f"at line {_line(blank.idxmax())})", "give every row a split, or drop --split-col")
    return split


def _index_images(root: Path) -> dict[str, Path]:
    """Map file stem and file name to path for every image under root (HAM10000 comes in two part folders)."""
    index: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and is_image(path):
            index.setdefault(path.name, path)
            index.setdefault(path.stem, path)
    return index


def _resolve_paths(names: pd.Series, root: Path, search: bool) -> pd.Series:
    """Paths relative to root; for HAM10000 (or when not found directly) search the whole tree by name."""
    direct = names.map(lambda n: root / n)
    if not search and direct.map(Path.is_file).all():
        return direct
    index = _index_images(root)

    def find(name: str) -> Path | None:
        candidate = root / name
        if candidate.is_file():
            return candidate
        if Path(name).parent != Path("."):  # a path that names a folder must match it, never a namesake elsewhere
            return None
        return index.get(name)

    return names.map(find)
