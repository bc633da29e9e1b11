"""3D MedMNIST `.npz` files as volume sources: each volume is its own patient, slices are the samples.

The six 3D MedMNIST sets (OrganMNIST3D, NoduleMNIST3D, AdrenalMNIST3D, FractureMNIST3D, VesselMNIST3D,
SynapseMNIST3D) ship as `{train,val,test}_images`, uint8 of shape (N, D, H, W), and `{split}_labels` (N, 1). Two
sizes exist: 28³ (`organmnist3d.npz`, the MedMNIST v2 original) and 64³ (`organmnist3d_64.npz`, MedMNIST+).
Both read the same way; a 64³ file gives 64×64 slices and holds 64 slices per volume instead of 28. Non-cubic
volumes are read too.

Each volume becomes one patient (group `train_000012`) and keeps the file's split, so every slice of a volume
stays in that volume's split and the bootstrap and patient-level metrics go by volume. Slices come out through
the NIfTI volume options: `--slices center:K | all-nonzero` (`tumor:K` needs a segmentation, which these files
lack, and is refused), `--plane`, `--normalize` (per volume, over its nonzero voxels, as for NIfTI).

Planes. The files carry no affine, so the planes follow the array order. The cubes were cut from CT and MR
volumes held as (z, y, x) arrays, slice-major as SimpleITK and DICOM stack them, and MedMNIST's own viewer
(`montage3d`, `save3d` in medmnist/utils.py) shows a volume as frames of its first axis. So:

- axial    = a cut across D (array axis 1 of the file, 0 of a volume): the (H, W) frame as MedMNIST shows it;
- coronal  = a cut across H: a (D, W) image, D pointing up (rows run from the last D index to the first);
- sagittal = a cut across W: a (D, H) image, D pointing up, H running right to left.

Up in coronal and sagittal slices is the end of D that NIfTI's RAS view puts at the top; the files cannot say
whether that is superior, and the slices are consistent across volumes either way, which is what a classifier
needs. Slice numbers in sample ids count along the file's axis (`train_000012/coronal005` is `[:, 5, :]`).
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.medmnist_info import name_classes
from medtransfer.data.npz_members import check_labels, read_member
from medtransfer.data.table import SampleTable
from medtransfer.data.volume_options import VolumeOptions, parse_slices
from medtransfer.data.volume_slices import apply_window, center_slices, intensity_window, nonzero_slices, plane_slice
from medtransfer.errors import UserError
from medtransfer.hashing import file_digest

# More than any channel count (grey 1, RGB 3, RGBA 4): an (N, A, B, C) array with every side above this is a
# stack of volumes, while (N, H, W, 1|3) is 2D images and (N, 3, H, W) channels-first 2D (refused by npz.py).
MAX_CHANNELS = 4
# The one channel of a 3D MedMNIST slice, for VolumeOptions (which wants modality names).
NPZ_MODALITY = ("volume",)


def is_volume_shape(shape: Sequence[int]) -> bool:
    """Whether an images array of this shape is (N, D, H, W) volumes rather than 2D images."""
    return len(shape) == 4 and min(shape[1:]) > MAX_CHANNELS


def member_shape(path: Path, key: str) -> tuple[int, ...] | None:
    """The shape of array KEY in an .npz from its .npy header alone (no decompression); None if unreadable."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return tuple(reader(handle)[0])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # npz.py reports unreadable files; this only decides which reader gets them


def holds_volumes(path: Path, splits: Sequence[str]) -> bool:
    """Whether any present split's images are (N, D, H, W) volumes, judged from the headers alone."""
    return any(is_volume_shape(shape) for s in splits if (shape := member_shape(path, f"{s}_images")) is not None)


# ---- the reader: `split:index|slice` → one uint8 slice ---------------------------------------------------------


def _ras_view(volume: np.ndarray) -> np.ndarray:
    """A (D, H, W) volume as the (1, X, Y, Z) stack plane_slice takes: X = W, Y = H reversed, Z = D (a view).

    With this view plane_slice's axial cut is the (H, W) frame as stored, and its coronal and sagittal cuts put
    D up; see the module docstring."""
    return np.flip(volume.transpose(2, 1, 0), axis=1)[None]


def _ras_index(volume_shape: tuple[int, ...], axis: int, index: int) -> int:
    """The index along RAS axis `axis` of the view that is `index` along the file's axis (Y runs reversed)."""
    return volume_shape[1] - 1 - index if axis == 1 else index


class VolumeStackReader:
    """Reads one slice of an in-memory (N, D, H, W) array, windowed with its own volume's intensities; picklable
    (the window cache is per process and is not pickled, so DataLoader workers start empty)."""

    def __init__(self, arrays: dict[str, np.ndarray], axis: int, normalize: str) -> None:
        self.arrays, self.axis, self.normalize = arrays, axis, normalize
        self._windows: dict[str, tuple[float, float]] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_windows": {}}

    def window(self, key: str) -> tuple[float, float]:
        """The (low, high) intensity window of volume `split:index`: computed once per volume, then reused."""
        if key not in self._windows:
            split, index = key.split(":")
            self._windows[key] = intensity_window(self.arrays[split][int(index)], self.normalize)
        return self._windows[key]

    def __call__(self, ref: object) -> np.ndarray:
        key, index = str(ref).rsplit("|", 1)
        split, volume_index = key.split(":")
        volume = self.arrays[split][int(volume_index)]
        cut = plane_slice(_ras_view(volume), self.axis, _ras_index(volume.shape, self.axis, int(index)), (1.0, 1.0))
        return apply_window(cut[:, :, 0], self.window(key))


# ---- loading and checking --------------------------------------------------------------------------------------


def _check_options(path: Path, options: VolumeOptions) -> None:
    if parse_slices(options.slices)[0] == "tumor":
        raise UserError(f"--slices {options.slices}", f"needs a tumour segmentation, and {path.name} (3D MedMNIST) "
                        "has none", "use --slices center:K or all-nonzero")
    if options.labels_csv:
        raise UserError(f"--labels-csv {options.labels_csv}", f"does not apply: {path.name} carries its own labels",
                        "drop --labels-csv")


def _check_images(path: Path, split: str, images: np.ndarray, first: tuple[int, ...] | None) -> None:
    """uint8 (N, D, H, W) of one volume size throughout the file, with no all-zero volume."""
    if not is_volume_shape(images.shape):
        raise UserError(str(path), f"{split}_images has shape {tuple(images.shape)} while other splits hold "
                        "(N, D, H, W) volumes", "give every split the same layout")
    if images.dtype != np.uint8:
        raise UserError(str(path), f"{split}_images is {images.dtype}, not uint8 as in 3D MedMNIST",
                        "convert it to 0-255 uint8 (e.g. np.clip(x, 0, 255).astype(np.uint8)) before saving")
    if first is not None and tuple(images.shape[1:]) != first:
        raise UserError(str(path), f"{split}_images holds volumes of {tuple(images.shape[1:])}, other splits "
                        f"{first}", "use one file per size (28³ or 64³), not a mix")
    if not len(images):
        raise UserError(str(path), f"{split}_images holds no volumes", "remove the empty split from the file")
    empty = np.flatnonzero(~images.reshape(len(images), -1).any(axis=1))
    if empty.size:
        raise UserError(str(path), f"{empty.size} {split} volume(s) are all zeros, nothing to normalise (first: "
                        f"{split}_{empty[0]:06d})", "remove them from the file, or re-export the volumes")


def _chosen(volume: np.ndarray, kind: str, count: int, file_axis: int) -> tuple[int, ...]:
    """Slice indices along the file's axis: the middle K, or every slice with a nonzero voxel."""
    if kind == "center":
        return center_slices(volume.shape[file_axis], count)
    return nonzero_slices(volume, file_axis)


def load_npz_volumes(path: Path, data: np.lib.npyio.NpzFile, splits: Sequence[str],
                     options: VolumeOptions) -> SampleTable:
    """One row per slice of every volume, grouped by volume, in the file's own splits; pixels read lazily."""
    _check_options(path, options)
    kind, count = parse_slices(options.slices)
    file_axis = 2 - options.axis  # RAS axis of the view (x: W, y: H, z: D) → axis of a (D, H, W) volume
    arrays, rows, first = {}, [], None
    for split in splits:
        if f"{split}_labels" not in data.files:
            raise UserError(str(path), f"has {split}_images but no {split}_labels", "add the labels array")
        images = read_member(data, path, f"{split}_images")
        _check_images(path, split, images, first)
        first = tuple(images.shape[1:])
        labels = [str(y) for y in check_labels(path, split, read_member(data, path, f"{split}_labels"),
                                               len(images)).tolist()]
        arrays[split] = images
        for i, (volume, label) in enumerate(zip(images, labels)):
            group = f"{split}_{i:06d}"
            rows += [(f"{group}/{options.plane}{k:03d}", label, group, split, f"{split}:{i}|{k}")
                     for k in _chosen(volume, kind, count, file_axis)]
    frame = pd.DataFrame(rows, columns=["sample_id", "label", "group", "split", "ref"])
    classes, notes = name_classes(path, frame)  # official names where the stem is a MedMNIST set, as for 2D files
    shape = f"{first[0]}³" if len(set(first)) == 1 else "×".join(map(str, first))
    layout = (f"3D MedMNIST .npz: {sum(len(a) for a in arrays.values())} volumes of {shape}, each its own patient, "
              f"in the file's own splits ({', '.join(arrays)}); {options.plane} slices by {options.slices}, "
              f"{options.normalize} per volume")
    fingerprint = hashlib.sha256(f"{file_digest(path)}|volumes|{options.slices}|{options.plane}|"
                                 f"{options.normalize}".encode()).hexdigest()
    reader = VolumeStackReader(arrays, options.axis, options.normalize)
    return SampleTable(frame, reader, str(path), fingerprint, classes, notes, layout=layout)


# ---- inspection ----------------------------------------------------------------------------------------------


def is_npz_volumes(table: SampleTable) -> bool:
    """Whether a table holds slices of 3D MedMNIST volumes."""
    return isinstance(table.reader, VolumeStackReader)


def describe_npz_volumes(table: SampleTable) -> dict:
    """For `inspect`: volume size, volumes and labels per split, and slices per volume."""
    frame, reader = table.frame, table.reader
    per_volume = frame.groupby("group").size()
    volumes = frame.drop_duplicates("group")
    by_split = {s: {"volumes": int(len(reader.arrays[s])),
                    "labels": {str(k): int(v) for k, v in volumes[volumes["split"] == s]["label"].value_counts()
                               .reindex(table.classes).dropna().items()}}  # in class (label) order
                for s in reader.arrays}
    shape = next(iter(reader.arrays.values())).shape[1:]
    return {"source": table.source, "volume_shape": "x".join(map(str, shape)), "splits": by_split,
            "slices": {"total": int(len(frame)), "per_volume_min": int(per_volume.min()),
                       "per_volume_max": int(per_volume.max())}}
