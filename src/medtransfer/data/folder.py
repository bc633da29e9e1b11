"""Image folders: class subfolders, optionally under split folders (train/test, Training/Testing, …).

How a folder is read (the layout is decided once, described in `SampleTable.layout`, and never guessed silently):

- Split folders are recognised by name, case-insensitively (`SPLIT_ALIASES`), or mapped with `--split-dirs`.
- Structure decides as well as names: when two or more top-level folders each hold the same two or more
  subfolders with images, they are split folders, whatever their names. Unrecognised names are refused with the
  `--split-dirs` hint rather than read as classes, since a model that tells `A_part` from `B_part` apart is no
  result at all.
- Inside a split folder (or the root, without splits) each subfolder is a class; images may sit at any depth.
- Refused, with the folder named: an empty class folder beside good ones (a class with no images in a layout the
  user made is almost surely a copy gone wrong), images lying loose beside class folders, two folders naming one
  split, and folders beside the split folders that are not splits.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medtransfer.data.images import FileReader, is_image, require_readable
from medtransfer.data.table import SPLITS, SampleTable
from medtransfer.errors import UserError
from medtransfer.hashing import files_fingerprint

# Folder names (lower case) of the splits in public sets as downloaded (Kaggle ships `Training/` and `Testing/`).
SPLIT_ALIASES = {"train": "train", "training": "train", "train_set": "train",
                 "val": "val", "valid": "val", "validation": "val", "dev": "val",
                 "test": "test", "testing": "test", "test_set": "test"}
RECOGNISED = "train/training/train_set, val/valid/validation/dev, test/testing/test_set"
# Archives made on macOS carry a __MACOSX folder of resource forks: never data, so never a class or a split.
IGNORED_DIRS = frozenset({"__macosx"})
LAYOUT_FIX = "lay images out as ROOT/<class>/*.png or ROOT/<split>/<class>/*.png"


@dataclass(frozen=True)
class FolderLayout:
    """Where the classes are: one class root per split (split None: no predefined splits), and why."""

    class_roots: dict[str | None, Path]
    description: str


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name.lower() not in IGNORED_DIRS


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and _visible(p))


def _loose_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))


def walk_images(folder: Path) -> Iterator[Path]:
    """Image files at any depth, skipping hidden and __MACOSX folders."""
    for path in folder.rglob("*"):
        if path.is_file() and is_image(path) and all(_visible(Path(part)) for part in path.relative_to(folder).parts):
            yield path


def _holds_images(folder: Path) -> bool:
    return next(walk_images(folder), None) is not None


def _image_subfolders(folder: Path) -> frozenset[str]:
    return frozenset(d.name for d in _subdirs(folder) if _holds_images(d))


def _names(folders: list[Path]) -> str:
    return ", ".join(d.name for d in folders)


def find_layout(root: Path, split_dirs: Mapping[str, str] | None = None) -> FolderLayout:
    """Decide which folders are splits and which are classes (explicit `split_dirs`, split names, or structure)."""
    top = _subdirs(root)
    if split_dirs:
        return _mapped_layout(root, top, split_dirs)
    named = [d for d in top if d.name.lower() in SPLIT_ALIASES]
    if named:
        return _named_layout(root, top, named)
    sets = [_image_subfolders(d) for d in top]
    if len(top) >= 2 and len(sets[0]) >= 2 and all(s == sets[0] for s in sets) \
            and not any(_loose_images(d) for d in top):
        raise UserError(str(root), f"the {len(top)} top-level folders ({_names(top)}) each hold the same "
                        f"{len(sets[0])} class folders ({', '.join(sorted(sets[0]))}), so they are split folders, "
                        f"but their names are not split names ({RECOGNISED})",
                        f"say which is which with --split-dirs train=NAME,test=NAME (NAME one of {_names(top)}; "
                        "add val=NAME for a validation folder)")
    return FolderLayout({None: root}, f"{len(top)} class folders, no split folders (splits will be carved)")


def _named_layout(root: Path, top: list[Path], named: list[Path]) -> FolderLayout:
    by_split: dict[str, Path] = {}
    for folder in named:
        split = SPLIT_ALIASES[folder.name.lower()]
        if split in by_split:
            raise UserError(str(root), f"folders {by_split[split].name!r} and {folder.name!r} both name the "
                            f"{split} split", "merge them into one folder, or move one out of DATA")
        by_split[split] = folder
    others = [d for d in top if d not in named]
    if others:
        raise UserError(str(root), f"folder {others[0].name!r} sits beside the split folders ({_names(named)}) but "
                        "is not a split", "move it out of DATA, or name every folder's split with "
                        "--split-dirs train=NAME,val=NAME,test=NAME")
    return FolderLayout(_in_split_order(by_split), f"split folders {_arrows(by_split)} (recognised by name)")


def _mapped_layout(root: Path, top: list[Path], split_dirs: Mapping[str, str]) -> FolderLayout:
    exact = {d.name: d for d in top}
    folded: dict[str, list[Path]] = {}
    for d in top:
        folded.setdefault(d.name.lower(), []).append(d)
    by_split: dict[str, Path] = {}
    for split, name in split_dirs.items():
        candidates = folded.get(name.lower(), [])
        folder = exact.get(name) or (candidates[0] if len(candidates) == 1 else None)
        if folder is None:
            raise UserError(f"--split-dirs {split}={name}", f"{root} has no folder {name!r} (its folders: "
                            f"{_names(top) or 'none'})", "name folders that sit directly in DATA")
        if folder in by_split.values():
            other = next(s for s, f in by_split.items() if f == folder)
            raise UserError("--split-dirs", f"folder {folder.name!r} is mapped to both {other} and {split}",
                            "map each folder to one split")
        by_split[split] = folder
    unmapped = [d for d in top if d not in by_split.values()]
    if unmapped:
        raise UserError("--split-dirs", f"folder {unmapped[0].name!r} in {root} is not mapped to a split "
                        f"(mapped: {_arrows(by_split)})", "map it too (train=, val= or test=), or move it out of DATA")
    return FolderLayout(_in_split_order(by_split), f"split folders {_arrows(by_split)} (given by --split-dirs)")


def _in_split_order(by_split: dict[str, Path]) -> dict[str | None, Path]:
    return {split: by_split[split] for split in SPLITS if split in by_split}


def _arrows(by_split: dict[str, Path]) -> str:
    return ", ".join(f"{folder.name}→{split}" for split, folder in _in_split_order(by_split).items())


def _class_rows(class_root: Path, split: str | None, root: Path) -> list[tuple]:
    """Rows of one split folder (or of the root): every class folder must hold images, none may lie loose."""
    classes = _subdirs(class_root)
    loose = _loose_images(class_root)
    if loose:
        where = f"beside {len(classes)} class folders" if classes else "and no class folders"
        raise UserError(str(class_root), f"holds {len(loose)} image(s) directly (first: {loose[0].name}) {where}",
                        f"move every image into a class folder; {LAYOUT_FIX}")
    rows, empty = [], []
    for class_dir in classes:
        images = sorted(walk_images(class_dir))
        if not images:
            empty.append(class_dir)
        rows += [(image.relative_to(root).as_posix(), class_dir.name, None, split, str(image)) for image in images]
    if empty and rows:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise UserError(str(empty[0]), f"is an empty class folder{more}: no images, beside "
                        f"{len(classes) - len(empty)} class folders that have some",
                        "add its images, or remove the folder if the class is not part of the task")
    if not rows:
        raise UserError(str(class_root), "holds no images in class subfolders", LAYOUT_FIX)
    return rows


def _shared_subfolder_note(layout: FolderLayout) -> list[str]:
    """Classes that all hold the same-named subfolders might be unrecognised split folders: say so, once."""
    (class_root,) = layout.class_roots.values()
    classes = _subdirs(class_root)
    if len(classes) < 2:
        return []
    shared = frozenset.intersection(*(_image_subfolders(d) for d in classes))
    if len(shared) < 2:  # one shared name ('images/') is a common class layout, not a sign of splits
        return []
    return [f"class folders {_names(classes)} all hold subfolders {', '.join(sorted(shared))}: if the class folders "
            "are really split folders, map them with --split-dirs train=NAME,test=NAME"]


def load_folder(root: Path, split_dirs: Mapping[str, str] | None = None) -> SampleTable:
    """Load class subfolders (images nested at any depth), with predefined splits when split folders are found
    by name or structure, or mapped by `split_dirs` (split -> folder name)."""
    if not root.is_dir():
        raise UserError(str(root), "is not a folder", "pass a folder of class subfolders")
    layout = find_layout(root, split_dirs)
    if None not in layout.class_roots:
        loose = _loose_images(root)
        if loose:
            raise UserError(str(root), f"holds {len(loose)} image(s) directly (first: {loose[0].name}) beside the "
                            "split folders", f"move them into a class folder of a split; {LAYOUT_FIX}")
    rows = [row for split, class_root in layout.class_roots.items() for row in _class_rows(class_root, split, root)]
    frame = pd.DataFrame(rows, columns=["sample_id", "label", "group", "split", "ref"])
    classes = sorted(frame["label"].unique())
    notes = _shared_subfolder_note(layout) if None in layout.class_roots else []
    paths = [Path(p) for p in frame["ref"]]
    require_readable(paths, str(root))
    description = layout.description if None in layout.class_roots \
        else f"{layout.description}; {len(classes)} class folders"
    return SampleTable(frame, FileReader(), str(root), files_fingerprint(paths, root), classes, notes,
                       layout=description)
