"""Reading the arrays of an .npz archive, for 2D and 3D MedMNIST files alike: members and their labels.

Object arrays are never unpickled (the archive is opened with allow_pickle=False); labels are checked once here
for both readers: float, negative and text labels are refused alike.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from medtransfer.errors import UserError


def read_member(data: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    """One array of an open .npz; an object array is refused without being unpickled (allow_pickle=False)."""
    try:
        return data[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # numpy's refusal to unpickle: the member holds Python objects
            raise UserError(str(path), f"{key} is an object array (pickled Python objects), which is never "
                            "unpickled", "save plain numeric arrays: uint8 images and integer labels") from None
        raise UserError(str(path), f"{key} is unreadable ({exc})", "re-download the file") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(str(path), f"{key} is unreadable ({exc})", "re-download the file") from None


def check_labels(path: Path, split: str, labels: np.ndarray, n: int) -> np.ndarray:
    """One non-negative whole-number label per image, as int64 of shape (n,); for 2D and 3D files alike.

    Float arrays are accepted when every value is a whole number (0.0, 1.0: some tools save labels as float) and
    bool is read as 0/1; 0.5 is no class, so fractions are refused, as are text, NaN and negative labels."""
    key = f"{split}_labels"
    if labels.ndim == 0:
        raise UserError(str(path), f"{key} is a single value, not one label per image",
                        "save labels of shape (N, 1), one per image")
    if labels.dtype.kind in "USO":
        example = labels.reshape(-1)[0] if labels.size else ""
        raise UserError(str(path), f"{key} holds text ({labels.dtype}, e.g. {str(example)!r}), not class numbers",
                        "store classes as integers 0..K-1 (MedMNIST layout), or use a CSV manifest for named classes")
    if labels.dtype.kind not in "biuf":
        raise UserError(str(path), f"{key} is {labels.dtype}, not integer class numbers",
                        "store classes as integers 0..K-1, shape (N, 1)")
    if len(labels) != n:
        raise UserError(str(path), f"{split} has {n} images but {len(labels)} labels", "fix the file so they match")
    labels = labels.reshape(n, -1)
    if labels.shape[1] != 1:
        raise UserError(str(path), f"{key} has {labels.shape[1]} columns (multi-label)",
                        "only single-label classification is supported")
    values = labels[:, 0]
    if values.dtype.kind == "f":
        odd = ~np.isfinite(values) | (values != np.round(values))
        if odd.any():
            raise UserError(str(path), f"{key} holds {int(odd.sum())} label(s) that are not whole numbers (first: "
                            f"{float(values[odd][0])} at row {int(np.flatnonzero(odd)[0])})",
                            "labels are class numbers 0..K-1; a soft or averaged label is not a class")
    values = values.astype(np.int64)
    if (values < 0).any():
        bad = values < 0
        raise UserError(str(path), f"{key} holds {int(bad.sum())} negative label(s) (first: {int(values[bad][0])} "
                        f"at row {int(np.flatnonzero(bad)[0])})", "labels are class numbers 0..K-1")
    return values
