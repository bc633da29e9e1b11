"""SampleTable: the one representation every data source turns into."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from medtransfer.errors import UserError

SPLITS = ("train", "val", "test")
COLUMNS = ("sample_id", "label", "group", "split", "ref")

METADATA_PREFIX = "subgroup:"  # a source's metadata column kept for subgroup analysis, as predictions.csv names it
# A reader turns a row's `ref` into pixels: uint8, (H, W) grey or (H, W, C).
PixelReader = Callable[[object], np.ndarray]


@dataclass
class SampleTable:
    """One row per sample: id, label, optional group, optional predefined split, and a pixel reference."""

    frame: pd.DataFrame
    reader: PixelReader
    source: str
    fingerprint: str
    classes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ordinal: bool = False  # classes run lowest to highest (e.g. disease grades), so ordinal metrics apply
    # How the source was read, and why (e.g. "split folders Training→train, Testing→test (recognised by name)"):
    # a description, not a warning, so it is shown by `inspect` rather than kept among the notes.
    layout: str | None = None

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.frame.columns]
        if missing:
            raise ValueError(f"SampleTable frame lacks columns {missing}")
        if not self.classes:
            self.classes = sorted(self.frame["label"].astype(str).unique())
        self.frame = self.frame.reset_index(drop=True)
        self.frame["label"] = self.frame["label"].astype(str)
        self.frame["target"] = self.frame["label"].map({c: i for i, c in enumerate(self.classes)})
        if self.frame["sample_id"].duplicated().any():
            dup = self.frame.loc[self.frame["sample_id"].duplicated(), "sample_id"].iloc[0]
            raise UserError(self.source, f"sample id {dup!r} appears twice", "give every sample a unique id")
        if len(self.frame) == 0:
            raise UserError(self.source, "no samples found", "check the path and the expected layout")
        self._check_groups()

    def _check_groups(self) -> None:
        # A blank id would make each such row its own patient in the split but crash the grouped bootstrap later,
        # after the training time is spent; so a half-filled group column is refused here, before any work.
        group = self.frame["group"]
        blank = group.isna() | group.map(lambda g: isinstance(g, str) and not g.strip())
        if blank.all():
            self.frame["group"] = None  # an all-blank column means no groups
        elif blank.any():
            ids = ", ".join(repr(str(i)) for i in self.frame.loc[blank, "sample_id"].iloc[:3])
            raise UserError(self.source, f"{int(blank.sum())} of {len(self.frame)} samples have a blank group id "
                            f"while the others have one (first: {ids})",
                            "fill in the group column for every row, or drop --group-col")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def has_groups(self) -> bool:
        """Whether samples carry a patient or lesion id."""
        return bool(self.frame["group"].notna().any())

    @property
    def metadata_columns(self) -> list[str]:
        """The frame's `subgroup:<col>` columns: metadata the source carried for subgroup analysis."""
        return [c for c in self.frame.columns if c.startswith(METADATA_PREFIX)]

    def pixels(self, index: int) -> np.ndarray:
        """Pixels of the sample at a row position."""
        return self.reader(self.frame["ref"].iat[index])

    def subset(self, split: str) -> pd.DataFrame:
        """Rows of one split (after splitting)."""
        return self.frame[self.frame["split"] == split]


def metadata_column(column: str) -> str:
    """The table's (and predictions.csv's) column holding a source's metadata column, e.g. `subgroup:sex`."""
    return f"{METADATA_PREFIX}{column}"


def with_class_order(table: SampleTable, order: list[str]) -> SampleTable:
    """The same table with its classes (and targets) in the given lowest-to-highest order, marked ordinal."""
    names = [str(name).strip() for name in order]  # "0, 1, 2" from a command line
    twice = sorted({n for n in names if names.count(n) > 1})
    unknown = [n for n in names if n not in table.classes]
    missing = [c for c in table.classes if c not in names]
    if twice or unknown or missing:
        problems = [f"names {twice} twice"] * bool(twice) + [f"names unknown class(es) {unknown}"] * bool(unknown)
        problems += [f"lacks class(es) {missing}"] * bool(missing)
        raise UserError(table.source, f"class order {names} {' and '.join(problems)}; the classes are {table.classes}",
                        "list every class exactly once, lowest to highest, in --class-order" + _by_name(unknown, table.classes))
    return replace(table, frame=table.frame.copy(), classes=names, notes=list(table.notes), ordinal=True)


def with_positive_class(table: SampleTable, name: str) -> SampleTable:
    """The same binary table with NAME as its second class (index 1): the positive class of ROC, AUPRC, the
    operating-point metrics and the val threshold, which all count class 1 as positive."""
    name, subject = name.strip(), f"positive class {name.strip()!r}"
    if len(table.classes) != 2:
        raise UserError(subject, f"applies to binary tasks; {table.source} has {len(table.classes)} classes "
                        f"{table.classes}", "drop --positive-class (multi-class metrics are one-vs-rest over every class)")
    if name not in table.classes:
        raise UserError(subject, f"is not a class of {table.source}; the classes are {table.classes}",
                        "give one of them to --positive-class" + _by_name([name], table.classes))
    negative = next(c for c in table.classes if c != name)
    if table.ordinal and table.classes[1] != name:
        # An ordinal order's highest class is positive; reversing it here would silently reverse the order too.
        raise UserError(subject, f"conflicts with the ordinal class order {table.classes} (lowest to highest), whose "
                        f"highest class {table.classes[1]!r} is positive", f"drop --positive-class, or order the "
                        f"classes with {name!r} highest ({negative!r} first) in --class-order")
    return replace(table, frame=table.frame.copy(), classes=[negative, name], notes=list(table.notes))


def _by_name(unknown: list[str], classes: list[str]) -> str:
    """The fix's hint when label numbers were given for named classes (a MedMNIST file's classes carry names)."""
    numbers = any(n.isdigit() for n in unknown) and not all(c.isdigit() for c in classes)
    return ", by name, not by label number" if numbers else ""


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Grey (H,W) or (H,W,1) and RGBA become (H,W,3) uint8, since every catalog backbone takes RGB."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)
