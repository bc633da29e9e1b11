"""Reading 2D image files into uint8 arrays, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medtransfer.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom"})
DICOM_SUFFIXES = (".dcm", ".dicom")


def is_image(path: Path) -> bool:
    """Whether a path has an image file suffix we read."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 (H,W) or (H,W,3); 16-bit data is rescaled, not clipped; DICOM radiographs
    get their rescale, VOI/window and MONOCHROME1 inversion."""
    if str(path).lower().endswith(DICOM_SUFFIXES):
        from medtransfer.data.dicom import read_radiograph

        return read_radiograph(path)
    try:
        with Image.open(path) as img:
            if img.mode in ("L", "RGB"):
                return np.asarray(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return _rescale(np.asarray(img, dtype=np.float32))
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(str(path), f"unreadable image ({exc})", "replace or remove the file") from None


def _rescale(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    return scaled.round().astype(np.uint8)


def check_headers(paths: list[Path]) -> list[str]:
    """Open each file's header (cheap) and return the unreadable ones, so a bad file fails before any work."""
    bad = []
    for path in paths:
        if str(path).lower().endswith(DICOM_SUFFIXES):
            if not _dicom_header_ok(path):
                bad.append(str(path))
            continue
        try:
            with Image.open(path) as img:
                img.size  # noqa: B018  (header parse is the check)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            bad.append(str(path))
    return bad


def _dicom_header_ok(path: Path) -> bool:
    import pydicom

    try:
        pydicom.dcmread(path, stop_before_pixels=True)
        return True
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
        return False


def require_readable(paths: list[Path], source: str) -> None:
    """Raise one UserError naming the first unreadable image (and how many there are)."""
    bad = check_headers(paths)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(bad[0], f"unreadable image{more} in {source}", "replace or remove the file")


class FileReader:
    """Reads image files by path; picklable for DataLoader workers."""

    def __call__(self, ref: object) -> np.ndarray:
        return read_image(str(ref))

