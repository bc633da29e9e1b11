"""Image folders: class subfolders, optionally under train/val/test (the Kaggle chest X-ray layout)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medtransfer.data.images import FileReader, is_image, require_readable
from medtransfer.data.table import SPLITS, SampleTable
from medtransfer.errors import UserError
from medtransfer.hashing import files_fingerprint

# Kaggle-style sets sometimes name the validation folder differently.
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_rows(class_root: Path, split: str | None, root: Path) -> list[tuple]:
    rows = []
    for class_dir in _subdirs(class_root):
        for image in sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image(p)):
            rows.append((image.relative_to(root).as_posix(), class_dir.name, None, split, str(image)))
    return rows


def load_folder(root: Path) -> SampleTable:
    """Load class subfolders (images nested at any depth), with predefined splits when present."""
    if not root.is_dir():
        raise UserError(str(root), "is not a folder", "pass a folder of class subfolders")
    split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in _subdirs(root) if d.name.lower() in SPLIT_ALIASES}
    if split_dirs:
        rows = [row for split in SPLITS if split in split_dirs for row in _class_rows(split_dirs[split], split, root)]
    else:
        rows = _class_rows(root, None, root)
    if not rows:
        raise UserError(str(root), "holds no images in class subfolders",
                        "lay images out as ROOT/<class>/*.png or ROOT/{train,val,test}/<class>/*.png")
    frame = pd.DataFrame(rows, columns=["sample_id", "label", "group", "split", "ref"])
    paths = [Path(p) for p in frame["ref"]]
    require_readable(paths, str(root))
    return SampleTable(frame, FileReader(), str(root), files_fingerprint(paths, root))
