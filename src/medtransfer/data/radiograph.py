"""Single-frame DICOM radiographs as 2D uint8 images: modality LUT, VOI LUT or window, MONOCHROME1 inverted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing

from medtransfer.data.dicom_files import decode_pixels, frame_count, has_pixels, read_dataset
from medtransfer.errors import UserError


def _voi(arr: np.ndarray, ds: Dataset, path: Path) -> np.ndarray | None:
    """The VOI LUT or window scaled to 0..1, or None when the file has neither."""
    voi_items = ds.get("VOILUTSequence")
    try:
        if voi_items and "LUTDescriptor" in voi_items[0] and "LUTData" in voi_items[0]:
            entries, first = int(voi_items[0].LUTDescriptor[0]) or 2**16, int(voi_items[0].LUTDescriptor[1])
            # pydicom casts inputs to the LUT's uint16 before clipping, so out-of-range values must be clipped here.
            inputs = np.clip(np.rint(arr), first, first + entries - 1).astype(np.int64)
            table = apply_voi(np.arange(first, first + entries), ds).astype(np.float64)
            out, lo, hi = apply_voi(inputs, ds).astype(np.float64), table.min(), table.max()
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            with np.errstate(over="ignore"):  # a SIGMOID window sends ±inf through exp
                bounds = apply_windowing(np.array([-np.inf, np.inf]), ds)
            out, lo, hi = apply_windowing(arr, ds), float(bounds.min()), float(bounds.max())
        else:
            return None
    except (ValueError, NotImplementedError, TypeError, IndexError) as exc:
        raise UserError(str(path), f"invalid VOI LUT or window ({exc})",
                        "fix or remove WindowCenter/WindowWidth and VOILUTSequence") from None
    return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)


def _unit(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def read_radiograph(path: str | Path) -> np.ndarray:
    """Single-frame DICOM to uint8 (H,W): modality LUT, VOI/window else min–max, MONOCHROME1 inverted; colour (H,W,3)."""
    path = Path(path)
    ds = read_dataset(path, "single-frame")
    if frame_count(ds) > 1:
        raise UserError(str(path), f"has {frame_count(ds)} frames, not a single radiograph",
                        "read it as a volume, or export one frame")
    if not has_pixels(ds):
        raise UserError(str(path), "has no pixel data", "pass an image file, not a report or presentation state")
    stored = decode_pixels(ds, path)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        stored = apply_color_lut(stored, ds)  # palette indices are not intensities: look the colours up
        if stored.dtype != np.uint8:  # 16-bit palette entries span 0..65535
            return np.round(stored.astype(np.float64) / 65535 * 255).astype(np.uint8)
    if stored.ndim == 3:  # colour (pydicom has already turned YBR into RGB): keep it, the tables take (H,W,3)
        return stored if stored.dtype == np.uint8 else np.round(_unit(stored.astype(np.float64)) * 255).astype(np.uint8)
    # float64 all the way: 16-bit values must survive until the single final mapping to 8 bits.
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    unit = _voi(values, ds, path)
    if unit is None:
        unit = _unit(values)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        unit = 1.0 - unit  # MONOCHROME1 stores dense as low values; everything downstream expects dense = bright
    return np.round(np.clip(unit, 0.0, 1.0) * 255).astype(np.uint8)
