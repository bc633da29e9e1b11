"""Reading NIfTI volumes: header checks, voxels refused when unusable, and resampling onto one reference grid."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import apply_affine
from nibabel.filebasedimages import ImageFileError
from nibabel.processing import resample_from_to

from medtransfer.errors import UserError

# nibabel, gzip and zlib report damaged files with any of these.
READ_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile)


def unreadable(path: Path, exc: Exception) -> UserError:
    """The error for a file nibabel, gzip or zlib could not read."""
    return UserError(str(path), f"is a truncated or corrupt NIfTI file ({type(exc).__name__}: {exc})",
                     "re-download or re-export the file, or remove the patient")


def load_header(path: Path) -> nib.spatialimages.SpatialImage:
    """The image with its header read and its voxels still on disk."""
    try:
        return nib.load(path)
    except READ_ERRORS as exc:
        raise unreadable(path, exc) from None


def _volume_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D shape, refusing 2D images and 4D series (trailing axes of length 1 are fine)."""
    core = list(shape)
    while len(core) > 3 and core[-1] == 1:
        core.pop()
    if len(core) < 3 or 1 in core[:3]:
        raise UserError(str(path), f"holds a 2D image (shape {tuple(shape)}) where a 3D volume is expected",
                        "export the whole volume as one NIfTI file")
    if len(core) > 3:
        raise UserError(str(path), f"holds a {len(core)}D series (shape {tuple(shape)}), not one 3D volume",
                        "extract one volume (e.g. with fslroi) and name it as a modality")
    return core[0], core[1], core[2]


def _check_affine(path: Path, affine: np.ndarray) -> None:
    if not np.isfinite(affine).all() or np.linalg.matrix_rank(affine[:3, :3]) < 3:
        raise UserError(str(path), "has a non-invertible affine (voxel-to-world matrix), so its voxels have no place "
                        "in space and cannot be aligned with the other modalities",
                        "fix the sform/qform in the header (re-export from the scanner or converter)")


def _intact(path: Path, img: nib.spatialimages.SpatialImage) -> Exception | None:
    """None when every voxel byte is there; cheap via sizes, with a full read only when the cheap check disagrees."""
    expected = getattr(img.dataobj, "offset", 0) + int(np.prod(img.shape)) * img.get_data_dtype().itemsize
    if not path.name.lower().endswith(".gz"):
        size = path.stat().st_size
        return None if size >= expected else EOFError(f"{size} bytes, header promises {expected}")
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        # The gzip trailer holds the uncompressed size mod 2**32; a cut file ends in arbitrary bytes instead.
        if int.from_bytes(handle.read(4), "little") == expected % 2**32:
            return None
    try:
        np.asanyarray(img.dataobj)
    except READ_ERRORS as exc:
        return exc
    return None


def check_volume(path: Path) -> nib.spatialimages.SpatialImage:
    """Open a NIfTI file and refuse 2D images, 4D series, non-invertible affines and truncated data."""
    img = load_header(path)
    _volume_shape(path, img.shape)
    _check_affine(path, img.affine)
    problem = _intact(path, img)
    if problem is not None:
        raise unreadable(path, problem)
    return img


def world_box(img: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box (low, high corner, mm) that the voxel grid covers in world space, from the header alone."""
    shape = np.array(img.shape[:3], float)
    # Corners of the outermost voxels' faces (±0.5 voxel), so a one-voxel overlap still counts as overlap.
    corners = np.array([[a, b, c] for a in (-0.5, shape[0] - 0.5) for b in (-0.5, shape[1] - 0.5)
                        for c in (-0.5, shape[2] - 0.5)])
    world = apply_affine(img.affine, corners)
    return world.min(axis=0), world.max(axis=0)


def overlap_problem(path: Path, img: nib.spatialimages.SpatialImage, ref_path: Path,
              reference: nib.spatialimages.SpatialImage) -> UserError | None:
    """An error when two volumes' world boxes do not overlap: resampling one onto the other gives only zeros."""
    (lo, hi), (ref_lo, ref_hi) = world_box(img), world_box(reference)
    if np.all(lo <= ref_hi) and np.all(ref_lo <= hi):
        return None
    return UserError(str(path), f"covers {_box_text(lo, hi)} in world space and {ref_path.name} covers "
                     f"{_box_text(ref_lo, ref_hi)}: "
                     "the volumes do not overlap, so resampling would give a channel of zeros",
                     "fix the affines (sform/qform) in the headers, or register the scans first (e.g. ANTs, FSL FLIRT)")


def _box_text(lo: np.ndarray, hi: np.ndarray) -> str:
    return ", ".join(f"{axis} {a:.1f}..{b:.1f} mm" for axis, a, b in zip("xyz", lo, hi))


def voxels(path: Path, img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """float32 voxels, refusing NaN or infinite voxels (they would blank the whole channel) and all-zero volumes."""
    try:
        data = img.get_fdata(dtype=np.float32)
    except READ_ERRORS as exc:
        raise unreadable(path, exc) from None
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise UserError(str(path), f"(patient {path.parent.name!r}) has {bad} NaN or infinite voxel(s) of {data.size}; "
                        "normalising would turn the whole channel to zeros",
                        "replace them, e.g. `fslmaths IN -nan OUT` (NaN to 0) or mask the volume, then rerun")
    if not data.any():
        raise UserError(str(path), f"(patient {path.parent.name!r}) is all zeros: nothing to normalise or learn from",
                        "re-export the volume, or remove the patient")
    return data


def canonical(path: Path) -> nib.Nifti1Image:
    """The volume reoriented to RAS (voxels read here), so array axes have fixed anatomical meaning."""
    img = check_volume(path)
    try:
        return nib.as_closest_canonical(nib.funcs.squeeze_image(img))
    except READ_ERRORS as exc:
        raise unreadable(path, exc) from None


def on_grid(img: nib.Nifti1Image, reference: nib.Nifti1Image, order: int,
             data: np.ndarray | None = None) -> np.ndarray:
    """Voxels of img (or DATA, its checked voxels) on the reference grid, matched through both affines (world
    space), never by array shape."""
    data = img.get_fdata(dtype=np.float32) if data is None else data
    if img.shape == reference.shape and np.allclose(img.affine, reference.affine, atol=1e-4):
        return data
    return resample_from_to(nib.Nifti1Image(data, img.affine), reference, order=order).get_fdata(dtype=np.float32)


def load_on_reference(paths: Sequence[Path], order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Volumes resampled onto the RAS grid of the first one: float32 (C, X, Y, Z) and that grid's affine.

    NaN, infinite and all-zero volumes are refused here, where the voxels are first read; so is a volume that
    leaves no nonzero voxel on the reference grid: a silent channel of zeros must never reach the model."""
    paths = [Path(p) for p in paths]
    reference = canonical(paths[0])
    volumes = []
    for path in paths:
        img = canonical(path)
        resampled = on_grid(img, reference, order, voxels(path, img))
        if not resampled.any():
            raise UserError(str(path), f"(patient {path.parent.name!r}) has no nonzero voxel on {paths[0].name}'s "
                            "grid once resampled: its field of view misses the reference's",
                            "fix the affines in the headers, or register the scans first (e.g. ANTs, FSL FLIRT)")
        volumes.append(resampled)
    return np.stack(volumes), reference.affine
