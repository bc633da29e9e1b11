"""MedMNIST-style .npz files: {train,val,test}_{images,labels}, with their official splits.

Every array is checked before a row is made, and a bad one is refused with one line naming the key:
- images: uint8 (N,H,W) or (N,H,W,C) with C 1 (grey) or 3 (RGB), N > 0; (N,D,H,W) with every side above 4 is
  a 3D MedMNIST volume set and goes to npz_volumes.py;
- labels: one per image, (N,) or (N,1), non-negative whole numbers (int, bool, or float holding whole numbers
  only: float 0.0/1.0 is read as 0/1, 0.5 is refused); text labels are refused;
- object arrays are refused without being unpickled (np.load runs with allow_pickle=False).

The classes keep the integer label order; a file named as MedMNIST names it (pneumoniamnist_64.npz) gets the
dataset's official class names (medmnist_info.py), any other file the integers.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.medmnist_info import dataset_of, name_classes
from medtransfer.data.npz_members import check_labels, read_member
from medtransfer.data.npz_volumes import holds_volumes, load_npz_volumes
from medtransfer.data.table import SPLITS, SampleTable
from medtransfer.data.volume_options import VolumeOptions
from medtransfer.errors import UserError
from medtransfer.hashing import file_digest


class ArrayReader:
    """Reads rows of in-memory image arrays; picklable so DataLoader workers can use it."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def __call__(self, ref: object) -> np.ndarray:
        split, index = str(ref).rsplit(":", 1)
        return self.arrays[split][int(index)]


def load_npz(path: Path, volumes: VolumeOptions | None = None) -> SampleTable:
    """Load a MedMNIST .npz (grey or RGB, any size) keeping its official splits; 3D MedMNIST files of (N, D, H, W)
    volumes become slices per VOLUMES (npz_volumes.py), which the caller builds from the run's settings
    (data.load.volume_options)."""
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
    if holds_volumes(path, present):  # (N, D, H, W): 3D MedMNIST, one patient per volume
        if volumes is None:  # a caller's mistake, not the user's: the run's settings always give them
            raise TypeError(f"{path} holds 3D volumes: load_npz needs their VolumeOptions (data.load.volume_options)")
        return load_npz_volumes(path, data, present, volumes)
    arrays, rows = {}, []
    for split in present:
        if f"{split}_labels" not in keys:
            raise UserError(str(path), f"has {split}_images but no {split}_labels", "add the labels array")
        images = read_member(data, path, f"{split}_images")
        check_images_2d(path, split, images)
        labels = check_labels(path, split, read_member(data, path, f"{split}_labels"), len(images))
        arrays[split] = images
        rows += [(f"{split}_{i:06d}", str(y), None, split, f"{split}:{i}") for i, y in enumerate(labels.tolist())]
    frame = pd.DataFrame(rows, columns=["sample_id", "label", "group", "split", "ref"])
    classes, notes = name_classes(path, frame)
    # RetinaMNIST's labels are diabetic retinopathy grades 0-4, an ordinal scale (MedMNIST's one ordinal task).
    ordinal = dataset_of(path) == "retinamnist"
    notes += [f"ordinal task: classes are grades {', '.join(classes)}, lowest to highest"] if ordinal else []
    layout = f"MedMNIST .npz of 2D images, with the file's own splits ({', '.join(present)})"
    return SampleTable(frame, ArrayReader(arrays), str(path), file_digest(path), classes, notes, ordinal,
                       layout=layout)


def check_images_2d(path: Path, split: str, images: np.ndarray) -> None:
    """uint8 (N,H,W) or (N,H,W,C) with C 1 (grey) or 3 (RGB), and at least one image."""
    key = f"{split}_images"
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise UserError(str(path), f"{key} is {images.dtype}{images.shape}",
                        "images must be uint8 (N,H,W) or (N,H,W,C) with C 1 or 3")
    if images.ndim == 4 and images.shape[-1] not in (1, 3):
        # (N,H,W,2) or channels-first (N,3,H,W): no backbone input; (N,D,H,W) volumes never get here (see above)
        raise UserError(str(path), f"{key} has shape {images.shape}: the last axis of 2D images must be 1 (grey) "
                        f"or 3 (RGB), not {images.shape[-1]}", "save images channels last with 1 or 3 channels "
                        "(channels first: np.moveaxis(x, 1, -1)); 3D volumes (N,D,H,W) need every side above 4")
    if len(images) == 0:
        raise UserError(str(path), f"{key} holds 0 images",
                        f"drop the empty {split} arrays from the file (the split is then carved), or fill them")
    if 0 in images.shape[1:]:
        raise UserError(str(path), f"{key} has shape {images.shape}: images of zero size", "re-export the file")
