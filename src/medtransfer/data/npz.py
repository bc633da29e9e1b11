"""MedMNIST-style .npz files: {train,val,test}_{images,labels}, with their official splits."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.table import SPLITS, SampleTable
from medtransfer.errors import UserError
from medtransfer.hashing import file_sha256


class ArrayReader:
    """Reads rows of in-memory image arrays; picklable so DataLoader workers can use it."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def __call__(self, ref: object) -> np.ndarray:
        split, index = str(ref).rsplit(":", 1)
        return self.arrays[split][int(index)]


def load_npz(path: Path) -> SampleTable:
    """Load a MedMNIST .npz (grey or RGB, any size) keeping its official splits."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(str(path), f"cannot read as .npz ({exc})", "pass a MedMNIST .npz file") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UserError(str(path), "holds a single array, not an .npz archive", "pass a MedMNIST .npz file")
    keys = set(data.files)
    present = [s for s in SPLITS if f"{s}_images" in keys]
    if not present:
        raise UserError(str(path), f"has keys {sorted(keys)}, none of train_images/val_images/test_images",
                        "use the MedMNIST layout: <split>_images and <split>_labels")
    arrays, rows = {}, []
    for split in present:
        if f"{split}_labels" not in keys:
            raise UserError(str(path), f"has {split}_images but no {split}_labels", "add the labels array")
        try:
            images, labels = data[f"{split}_images"], data[f"{split}_labels"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise UserError(str(path), f"{split} arrays are unreadable ({exc})", "re-download the file") from None
        if images.ndim not in (3, 4) or images.dtype != np.uint8:
            raise UserError(str(path), f"{split}_images is {images.dtype}{images.shape}",
                            "images must be uint8 (N,H,W) or (N,H,W,C)")
        labels = labels.reshape(len(labels), -1)
        if labels.shape[1] != 1:
            raise UserError(str(path), f"{split}_labels has {labels.shape[1]} columns (multi-label)",
                            "only single-label classification is supported")
        if len(labels) != len(images):
            raise UserError(str(path), f"{split} has {len(images)} images but {len(labels)} labels",
                            "fix the file so they match")
        arrays[split] = images
        rows += [(f"{split}_{i:06d}", str(int(y)), None, split, f"{split}:{i}") for i, y in enumerate(labels[:, 0])]
    frame = pd.DataFrame(rows, columns=["sample_id", "label", "group", "split", "ref"])
    classes = sorted(frame["label"].unique(), key=int)  # labels are integers: "10" comes after "9"
    # RetinaMNIST's labels are diabetic retinopathy grades 0-4, an ordinal scale (MedMNIST's one ordinal task).
    ordinal = path.stem.lower().startswith("retinamnist")
    notes = [f"ordinal task: classes are grades {', '.join(classes)}, lowest to highest"] if ordinal else []
    return SampleTable(frame, ArrayReader(arrays), str(path), file_sha256(path), classes, notes, ordinal)
