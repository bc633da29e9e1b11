"""DICOM studies as volume sources: each patient's series are matched to modalities and converted to NIfTI once.

The converted files (RAS affine from the DICOM geometry, modality units) then go through the same NIfTI path as
any other volume set, so resampling, slicing and normalisation are shared rather than written twice.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import nibabel as nib

from medtransfer.data.dicom_series import find_series, match_modalities, read_volume
from medtransfer.data.file_kinds import is_dicom
from medtransfer.errors import UserError
from medtransfer.hashing import files_fingerprint
from medtransfer.leftovers import remove_stale_staging


def holds_dicom(root: Path) -> bool:
    """Whether a folder tree holds DICOM files (and so is read as DICOM studies)."""
    return any(p.is_file() and is_dicom(p) for p in Path(root).rglob("*"))


def _patient_dirs(root: Path) -> list[tuple[str, Path]]:
    """ROOT/<patient>/... (each subfolder a patient), or ROOT itself when its DICOM files sit in one study tree."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs and all(holds_dicom(d) for d in subdirs) and len(subdirs) > 1:
        return [(d.name, d) for d in subdirs]
    return [(root.name, root)]


def _fingerprint(root: Path, modalities: tuple[str, ...]) -> str:
    files = files_fingerprint(sorted(p for p in root.rglob("*") if p.is_file()), root)
    return hashlib.sha256(f"{files}|{'|'.join(modalities)}".encode()).hexdigest()[:20]


def convert_dicom_tree(root: Path, modalities: tuple[str, ...], cache: Path) -> Path:
    """Convert every patient's matched series to `<cache>/<key>/<patient>/<patient>_<modality>.nii.gz`; reused
    while the DICOM files are unchanged. Ambiguous or missing matches and empty series are user errors."""
    final = cache / _fingerprint(root, modalities)
    if final.is_dir():
        return final
    remove_stale_staging(cache)  # conversions killed mid-way
    staging = cache / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for pid, folder in _patient_dirs(root):
            matched = match_modalities(list(find_series(folder)), list(modalities))
            (staging / pid).mkdir(parents=True)
            for modality, series in matched.items():
                volume, affine = read_volume(series)
                if min(volume.shape[:3]) < 2:
                    raise UserError(f"patient {pid!r} series {series.label}", f"has shape {volume.shape}: one slice "
                                    "is not a volume", "export the whole series, or read it as 2D images")
                nib.save(nib.Nifti1Image(volume, affine), staging / pid / f"{pid}_{modality}.nii.gz")
        os.replace(staging, final)
    except UserError:
        raise
    except OSError as exc:
        raise UserError(str(cache), f"cannot write converted volumes ({exc.strerror})", "set --cache-dir") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
