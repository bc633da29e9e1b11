"""Opening DICOM files and decoding their pixel data, with errors that name the file (and the missing plugin)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

from medtransfer.errors import UserError

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def has_pixels(ds: Dataset) -> bool:
    """Whether a dataset carries pixel data of any of the three kinds."""
    return any(keyword in ds for keyword in _PIXEL_KEYWORDS)


def decode_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values, with a UserError that says which decoder plugin is missing."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        return ds.pixel_array
    except RuntimeError as exc:  # NotImplementedError (unknown syntax) is a RuntimeError too
        if syntax is None or not syntax.is_transfer_syntax:
            raise UserError(str(path), f"unknown transfer syntax {syntax}: no pydicom plugin decodes it",
                            "re-export the file uncompressed (e.g. gdcmconv --raw), "
                            "or pip install python-gdcm if it is a vendor codec GDCM knows") from None
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            decoder = None
        if decoder is not None and decoder.is_available:  # plugins are installed but every one failed on this file
            raise UserError(str(path), f"cannot decode its {syntax.name} pixel data ({' '.join(str(exc).split())})",
                            "replace the file, or pip install python-gdcm as another decoder") from None
        install = "; ".join(decoder.missing_dependencies) if decoder is not None else "python-gdcm"
        raise UserError(str(path), f"no installed plugin decodes {syntax.name} pixel data",
                        f"install a decoder plugin: {install}") from None
    except (ValueError, AttributeError, TypeError, EOFError) as exc:
        raise UserError(str(path), f"unreadable pixel data ({str(exc).splitlines()[0]})",
                        "replace or remove the file") from None


def read_dataset(path: Path, what: str) -> Dataset:
    """The whole dataset of a file; WHAT (e.g. "single-frame") says what kind of DICOM file was expected."""
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        raise UserError(str(path), "is not a DICOM file (no DICM preamble)",
                        f"pass a {what} DICOM file, or convert the file") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise UserError(str(path), f"unreadable DICOM file ({exc})", "replace or remove the file") from None


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames, 1 when absent or unreadable."""
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1


def header_ok(path: Path) -> bool:
    """Whether a DICOM file's header parses (pixel data not read)."""
    try:
        pydicom.dcmread(path, stop_before_pixels=True)
        return True
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return False
