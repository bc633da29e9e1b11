"""From volume arrays to 2D slices: intensity windows, plane cuts with square pixels, which slice indices to take.

Plain numpy on arrays, no file formats: NIfTI sets (volumes.py) and 3D MedMNIST files (npz_volumes.py) share it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PERCENTILES = (0.5, 99.5)
Z_RANGE = 3.0


def intensity_window(volume: np.ndarray, method: str) -> tuple[float, float]:
    """(low, high) intensities that map to 0 and 255, from the brain (nonzero) voxels: the 0.5-99.5 percentiles,
    or mean ± 3 SD (z-score clipped at ±3, rescaled). (0, 0) when no voxel is nonzero."""
    values = np.asarray(volume, np.float32)[volume != 0]
    if not values.size:
        return 0.0, 0.0
    if method == "percentile":
        lo, hi = np.percentile(values, PERCENTILES)
    else:
        mean, std = float(values.mean()), float(values.std())
        lo, hi = mean - Z_RANGE * std, mean + Z_RANGE * std
    return float(lo), float(hi)


def apply_window(volume: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """uint8 of any part of a volume (all of it, or one slice) through its window; background (0) stays 0.

    A constant brain (hi == lo, e.g. a binary mask) becomes 255, so a mask shows as foreground, not as black."""
    lo, hi = window
    brain = volume != 0
    out = np.zeros(volume.shape, np.uint8)
    values = np.asarray(volume[brain], np.float32)
    unit = (np.clip(values, lo, hi) - lo) / (hi - lo) if hi > lo else np.ones_like(values)
    out[brain] = np.round(unit * 255)
    return out


def normalise(volume: np.ndarray, method: str) -> np.ndarray:
    """uint8 volume from brain voxels (the nonzero ones): percentile clip or z-score; background stays 0."""
    return apply_window(volume, intensity_window(volume, method))


def plane_slice(stack: np.ndarray, axis: int, index: int, spacing: tuple[float, float]) -> np.ndarray:
    """(H, W, C) slice of a (C, X, Y, Z) RAS stack: superior/anterior up, patient's right on the right, square pixels."""
    cut = np.take(stack, index, axis=axis + 1)
    # rot90 puts the slice's second axis (A for axial, S for coronal and sagittal) pointing up.
    image = np.moveaxis(np.rot90(cut, axes=(1, 2)), 0, -1)
    col_mm, row_mm = spacing
    finest = min(row_mm, col_mm)
    if not np.isclose(row_mm, col_mm, rtol=0.02):  # thick slices: stretch the coarse axis so anatomy keeps its shape
        image = ndimage.zoom(image, (row_mm / finest, col_mm / finest, 1), order=1)
    return np.ascontiguousarray(image)


def center_slices(n: int, count: int) -> tuple[int, ...]:
    """The `count` middle indices of `n` slices (all of them when count >= n)."""
    count = min(count, n)
    return tuple(range((n - count) // 2, (n - count) // 2 + count))


def nonzero_slices(volume: np.ndarray, axis: int) -> tuple[int, ...]:
    """Indices along `axis` of the slices holding at least one nonzero voxel."""
    others = tuple(a for a in range(volume.ndim) if a != axis)
    return tuple(int(i) for i in np.flatnonzero((volume != 0).any(axis=others)))
