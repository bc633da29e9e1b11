"""CSV manifests: one row per image, columns chosen by option; HAM10000 metadata recognised by its columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medtransfer.data.images import FileReader, is_image, require_readable
from medtransfer.data.table import SPLITS, SampleTable
from medtransfer.errors import UserError
from medtransfer.hashing import files_fingerprint

HAM10000_COLUMNS = {"image_id", "dx", "lesion_id"}


@dataclass(frozen=True)
class ManifestColumns:
    """Which CSV columns hold the path, label, group and split."""

    path: str = "path"
    label: str = "label"
    group: str | None = None
    split: str | None = None


def detect_columns(header: list[str], given: ManifestColumns) -> tuple[ManifestColumns, bool]:
    """HAM10000 metadata (image_id, dx, lesion_id) is recognised unless the user chose other columns."""
    if HAM10000_COLUMNS <= set(header) and given == ManifestColumns():
        return ManifestColumns(path="image_id", label="dx", group="lesion_id"), True
    return given, False


def _index_images(root: Path) -> dict[str, Path]:
    """Map file stem and file name to path for every image under root (HAM10000 comes in two part folders)."""
    index: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and is_image(path):
            index.setdefault(path.name, path)
            index.setdefault(path.stem, path)
    return index


def load_manifest(csv_path: Path, columns: ManifestColumns, image_root: Path | None, skip_missing: bool) -> SampleTable:
    """Load a CSV manifest into a SampleTable; missing images are an error unless skip_missing."""
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(str(csv_path), f"cannot read as CSV ({exc})", "pass a comma-separated manifest") from None
    columns, is_ham = detect_columns(list(frame.columns), columns)
    wanted = {"--path-col": columns.path, "--label-col": columns.label,
              "--group-col": columns.group, "--split-col": columns.split}
    unknown = [f"{opt} {col!r}" for opt, col in wanted.items() if col is not None and col not in frame.columns]
    if unknown:
        raise UserError(str(csv_path), f"no column {', '.join(unknown)}; columns are {list(frame.columns)}",
                        "pick existing columns with --path-col/--label-col/--group-col/--split-col")
    no_label = frame[columns.label].isna()
    if no_label.any():
        row = int(no_label.idxmax()) + 2  # +2: header line and 1-based lines
        raise UserError(str(csv_path), f"{int(no_label.sum())} row(s) have no {columns.label!r} label (first at line {row})",
                        "fill in the label or drop the row")
    root = image_root or csv_path.parent
    if not root.is_dir():
        raise UserError(str(root), "image root is not a folder", "set --image-root to the folder holding the images")
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
    split = frame[columns.split].str.lower() if columns.split else None
    if split is not None:
        bad = sorted(set(split.dropna()) - set(SPLITS))
        if bad:
            raise UserError(str(csv_path), f"column {columns.split!r} has values {bad}", "use train, val or test")
    table = pd.DataFrame({
        "sample_id": frame[columns.path].map(lambda p: Path(p).stem if is_ham else p).values,
        "label": frame[columns.label].values,
        "group": frame[columns.group].values if columns.group else None,
        "split": split.values if split is not None else None,
        "ref": paths.astype(str).values,
    })
    files = [Path(p) for p in table["ref"]]
    require_readable(files, str(csv_path))
    return SampleTable(table, FileReader(), str(csv_path), files_fingerprint(files, root), notes=notes)


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
