"""Tiny NIfTI volume sets written with nibabel, for the volume tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from helpers import volume_settings


BRATS = ("t1post", "t2", "flair")


def slice_index(ref: str) -> int:
    """The slice number at the end of a volume sample's ref."""
    return int(ref.rsplit("|", 1)[1])


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save DATA as a float32 NIfTI file (identity affine unless given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4) if affine is None else affine), path)
    return path


def head_volume(shape=(12, 12, 8), seed=0) -> np.ndarray:
    """A bright ellipsoid on a zero background, so the nonzero voxels are the 'brain'."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    inside = sum(((g - c) / (c * 0.8)) ** 2 for g, c in zip(grid, centre)) <= 1
    return inside * (100 + np.random.default_rng(seed).normal(0, 10, shape))


def write_patient(root: Path, pid: str, modalities=("t1", "t2", "flair"), seg: np.ndarray | None = None) -> Path:
    """ROOT/PID/ with one head volume per modality (and the segmentation when given)."""
    for k, m in enumerate(modalities):
        write_nifti(root / pid / f"{pid}_{m}.nii.gz", head_volume(seed=k))
    if seg is not None:
        write_nifti(root / pid / f"{pid}_seg.nii.gz", seg)
    return root / pid


SYNTH = volume_settings(modalities=("t1", "t2", "flair"), slices="center:4")
