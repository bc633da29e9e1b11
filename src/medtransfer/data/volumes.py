"""NIfTI volume sets: one folder per patient, modalities resampled onto one grid, 2D slices as samples."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.affines import apply_affine
from nibabel.filebasedimages import ImageFileError
from nibabel.processing import resample_from_to
from scipy import ndimage

from medtransfer.data.table import SampleTable
from medtransfer.data.volume_options import VolumeOptions, parse_slices
from medtransfer.errors import UserError
from medtransfer.hashing import files_fingerprint

UNLABELLED = "unlabelled"
PERCENTILES = (0.5, 99.5)
Z_RANGE = 3.0
# Sequences of one session differ by a few mm of head motion; brain centres further apart mean unregistered headers.
ALIGN_MM = 20.0
ALIGN_CHECKED = 5
# nibabel, gzip and zlib report damaged files with any of these.
READ_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile)


# ---- layout: patients, labels and files -------------------------------------------------------------------------


@dataclass(frozen=True)
class Patient:
    """One patient folder: its label, one file per modality (channel order) and the segmentation if used."""

    pid: str
    label: str
    folder: Path
    paths: tuple[Path, ...]
    seg: Path | None = None


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith((".nii", ".nii.gz"))


def _niftis(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_nifti(p))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _patient_folders(root: Path) -> list[tuple[str, Path, str | None]]:
    """(patient id, folder, class from a parent folder or None); files directly in ROOT make a one-patient set."""
    if not root.is_dir():
        raise UserError(str(root), "is not a folder", "pass a folder of patient folders holding NIfTI files")
    if _niftis(root):
        return [(root.name, root, None)]
    flat, nested = [], []
    for sub in _subdirs(root):
        if _niftis(sub):
            flat.append((sub.name, sub, None))
        nested += [(p.name, p, sub.name) for p in _subdirs(sub) if _niftis(p)]
    if flat and nested:
        raise UserError(str(root), "mixes patient folders and class folders of patients",
                        "use ROOT/<patient>/ with a labels CSV, or ROOT/<class>/<patient>/, not both")
    found = flat or nested
    if not found:
        raise UserError(str(root), "holds no NIfTI files (.nii, .nii.gz) in patient folders",
                        "lay out ROOT/<patient>/<case>_<modality>.nii.gz or ROOT/<class>/<patient>/...")
    twice = [pid for pid, n in Counter(pid for pid, _, _ in found).items() if n > 1]
    if twice:
        raise UserError(str(root), f"patient folder {twice[0]!r} appears in more than one class folder",
                        "give each patient one folder")
    _check_near_duplicate_ids([pid for pid, _, _ in found], str(root))
    return found


def _check_near_duplicate_ids(pids: list[str], where: str) -> None:
    """Refuse ids equal but for case or surrounding spaces ('P01', 'p01 '): one patient twice splits across sets."""
    seen: dict[str, str] = {}
    for pid in pids:
        key = pid.strip().casefold()
        if key in seen:
            raise UserError(where, f"patient folders {seen[key]!r} and {pid!r} differ only in case or spaces: "
                            "the same patient twice would land in two splits and leak",
                            "merge the two folders into one, or rename one if they are different patients")
        seen[key] = pid


def _read_labels(csv_path: Path) -> dict[str, str]:
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(str(csv_path), f"cannot read the labels CSV ({exc})", "pass a CSV with patient_id,label") from None
    if not {"patient_id", "label"} <= set(frame.columns):
        raise UserError(str(csv_path), f"needs columns patient_id and label, has {list(frame.columns)}",
                        "rename the columns to patient_id,label")
    ids, labels = frame["patient_id"].str.strip(), frame["label"].str.strip()
    if ids.duplicated().any() or (labels == "").any() or (ids == "").any():
        raise UserError(str(csv_path), "has a repeated or empty patient_id, or an empty label",
                        "give each patient exactly one row with a label")
    return dict(zip(ids, labels))


def _labels(found: list[tuple[str, Path, str | None]], opts: VolumeOptions) -> dict[str, str]:
    """Each patient's label: from the labels CSV, from its class folder, or 'unlabelled'."""
    if opts.labels_csv is None:
        return {pid: cls or UNLABELLED for pid, _, cls in found}
    csv_path = Path(opts.labels_csv).expanduser()
    if any(cls for _, _, cls in found):
        raise UserError(str(csv_path), "labels come from both this CSV and class folders",
                        "drop the labels CSV, or lay patients out as ROOT/<patient>/")
    labels = _read_labels(csv_path)
    folders = {pid for pid, _, _ in found}
    no_folder, no_row = sorted(set(labels) - folders), sorted(folders - set(labels))
    if no_folder or no_row:
        raise UserError(str(csv_path), f"patients do not match the folders: {len(no_folder)} listed without a folder "
                        f"{no_folder[:3]}, {len(no_row)} folder(s) without a label row {no_row[:3]}",
                        "make patient_id match the patient folder names")
    return labels


def _modality_key(path: Path) -> str:
    """'T1Post.nii.gz' → 't1post', 'BraTS19_x_t1post.nii.gz' → 't1post': the bare name or the part after the last _."""
    stem = path.name.lower().removesuffix(".gz").removesuffix(".nii")
    return stem.rsplit("_", 1)[-1]


def _match(files: list[Path], pid: str, modality: str, pattern: str) -> Path | None:
    """The file of one modality: the pattern first, else `<modality>.nii[.gz]` or `*_<modality>.nii[.gz]`, any case."""
    wanted = pattern.format(case=pid, modality=modality).lower()
    exact = [f for f in files if f.name.lower() == wanted]
    hits = exact or [f for f in files if _modality_key(f) == modality.lower()]
    if len(hits) > 1:
        raise UserError(f"patient {pid!r}", f"has several files for {modality!r}: {[f.name for f in hits]}",
                        "keep one, or set a pattern that picks one")
    return hits[0] if hits else None


def _find_patients(root: Path, opts: VolumeOptions) -> tuple[list[Patient], list[str]]:
    """Every patient with all files found; missing files are an error unless skip_incomplete (then a note)."""
    found = _patient_folders(root)
    labels = _labels(found, opts)
    needs_seg = parse_slices(opts.slices)[0] == "tumor"
    wanted = list(opts.modalities) + ([opts.seg_name] if needs_seg else [])
    patients, missing = [], []
    for pid, folder, _ in found:
        files = _niftis(folder)
        paths = [_match(files, pid, m, opts.pattern) for m in wanted]
        gaps = [m for m, p in zip(wanted, paths) if p is None]
        if gaps:
            missing.append((pid, folder, gaps))
            continue
        seg = paths.pop() if needs_seg else None
        patients.append(Patient(pid, labels[pid], folder, tuple(paths), seg))
    _check_missing(root, opts, found, missing)
    notes = []
    if missing:
        notes.append(f"skipped {len(missing)} of {len(found)} patients missing a file "
                     f"(first: {missing[0][0]!r} lacks {', '.join(missing[0][2])})")
    return patients, notes


def _check_missing(root: Path, opts: VolumeOptions, found: list, missing: list) -> None:
    """Raise for a name no patient has, or (unless skip_incomplete) for the first patient lacking a file."""
    if not missing:
        return
    why = {opts.seg_name: " (slices tumor:K needs it)"}
    everywhere = set.intersection(*(set(gaps) for _, _, gaps in missing)) if len(missing) == len(found) else set()
    if everywhere:
        name = next(m for m in missing[0][2] if m in everywhere)
        seen = sorted({_modality_key(f) for _, folder, _ in found for f in _niftis(folder)})
        raise UserError(f"modality {name!r}", f"matches no file in any of the {len(found)} patient folder(s) under "
                        f"{root}{why.get(name, '')}; modalities seen: {seen}",
                        "use modality names from the file names, or set the pattern")
    pid, folder, gaps = missing[0]
    if not opts.skip_incomplete:
        more = f"; {len(missing) - 1} more patient(s) lack files too" if len(missing) > 1 else ""
        raise UserError(f"patient {pid!r}", f"has no {gaps[0]!r} file in {folder}{why.get(gaps[0], '')} (looked for "
                        f"pattern {opts.pattern!r}, then {gaps[0]}.nii[.gz] or *_{gaps[0]}.nii[.gz], any case){more}",
                        "add the file, fix the pattern, or pass --skip-incomplete to drop such patients")
    if len(missing) == len(found):
        raise UserError(str(root), "no patient has every requested file", "check the modality names and the pattern")


# ---- reading, checking and resampling volumes ------------------------------------------------------------------


def _unreadable(path: Path, exc: Exception) -> UserError:
    return UserError(str(path), f"is a truncated or corrupt NIfTI file ({type(exc).__name__}: {exc})",
                     "re-download or re-export the file, or remove the patient")


def _load(path: Path) -> nib.spatialimages.SpatialImage:
    """The image with its header read and its voxels still on disk."""
    try:
        return nib.load(path)
    except READ_ERRORS as exc:
        raise _unreadable(path, exc) from None


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
    img = _load(path)
    _volume_shape(path, img.shape)
    _check_affine(path, img.affine)
    problem = _intact(path, img)
    if problem is not None:
        raise _unreadable(path, problem)
    return img


def world_box(img: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box (low, high corner, mm) that the voxel grid covers in world space, from the header alone."""
    shape = np.array(img.shape[:3], float)
    # Corners of the outermost voxels' faces (±0.5 voxel), so a one-voxel overlap still counts as overlap.
    corners = np.array([[a, b, c] for a in (-0.5, shape[0] - 0.5) for b in (-0.5, shape[1] - 0.5)
                        for c in (-0.5, shape[2] - 0.5)])
    world = apply_affine(img.affine, corners)
    return world.min(axis=0), world.max(axis=0)


def _disjoint(path: Path, img: nib.spatialimages.SpatialImage, ref_path: Path,
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
        raise _unreadable(path, exc) from None
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise UserError(str(path), f"(patient {path.parent.name!r}) has {bad} NaN or infinite voxel(s) of {data.size}; "
                        "normalising would turn the whole channel to zeros",
                        "replace them, e.g. `fslmaths IN -nan OUT` (NaN to 0) or mask the volume, then rerun")
    if not data.any():
        raise UserError(str(path), f"(patient {path.parent.name!r}) is all zeros: nothing to normalise or learn from",
                        "re-export the volume, or remove the patient")
    return data


def _canonical(path: Path) -> nib.Nifti1Image:
    """The volume reoriented to RAS (voxels read here), so array axes have fixed anatomical meaning."""
    img = check_volume(path)
    try:
        return nib.as_closest_canonical(nib.funcs.squeeze_image(img))
    except READ_ERRORS as exc:
        raise _unreadable(path, exc) from None


def _on_grid(img: nib.Nifti1Image, reference: nib.Nifti1Image, order: int,
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
    reference = _canonical(paths[0])
    volumes = []
    for path in paths:
        img = _canonical(path)
        on_grid = _on_grid(img, reference, order, voxels(path, img))
        if not on_grid.any():
            raise UserError(str(path), f"(patient {path.parent.name!r}) has no nonzero voxel on {paths[0].name}'s "
                            "grid once resampled: its field of view misses the reference's",
                            "fix the affines in the headers, or register the scans first (e.g. ANTs, FSL FLIRT)")
        volumes.append(on_grid)
    return np.stack(volumes), reference.affine


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


@functools.lru_cache(maxsize=16)
def _patient_slices(paths: tuple[str, ...], normalize: str, axis: int, indices: tuple[int, ...]) -> dict[int, np.ndarray]:
    """One patient's chosen slices, (H, W, C) uint8; cached so each worker reads a patient's volumes once."""
    stack, affine = load_on_reference([Path(p) for p in paths])
    stack = np.stack([normalise(v, normalize) for v in stack])
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    spacing = tuple(float(z) for i, z in enumerate(zooms) if i != axis)
    return {i: plane_slice(stack, axis, i, spacing) for i in indices}


@dataclass(frozen=True)
class VolumeReader:
    """Turns `patient|slice` (fused) or `patient|modality|slice` (separate) into uint8 pixels; picklable."""

    files: dict[str, tuple[str, ...]]
    indices: dict[str, tuple[int, ...]]
    modalities: tuple[str, ...]
    fused: bool
    normalize: str
    axis: int

    def __call__(self, ref: object) -> np.ndarray:
        pid, *modality, index = str(ref).rsplit("|", 1 if self.fused else 2)
        image = _patient_slices(self.files[pid], self.normalize, self.axis, self.indices[pid])[int(index)]
        if self.fused:
            return image[:, :, 0].copy() if image.shape[2] == 1 else image.copy()
        return image[:, :, self.modalities.index(modality[0])].copy()


# ---- slice choice and the table -----------------------------------------------------------------------------------


def _canonical_shape(img: nib.spatialimages.SpatialImage) -> tuple[int, ...]:
    """The shape after RAS reorientation, from the header alone (no voxels read)."""
    ornt = nib.io_orientation(img.affine)
    shape = [0, 0, 0]
    for src, (dst, _) in enumerate(ornt):
        shape[int(dst)] = img.shape[src]
    return tuple(shape)


def center_slices(n: int, count: int) -> tuple[int, ...]:
    """The `count` middle indices of `n` slices (all of them when count >= n)."""
    count = min(count, n)
    return tuple(range((n - count) // 2, (n - count) // 2 + count))


def nonzero_slices(volume: np.ndarray, axis: int) -> tuple[int, ...]:
    """Indices along `axis` of the slices holding at least one nonzero voxel."""
    others = tuple(a for a in range(volume.ndim) if a != axis)
    return tuple(int(i) for i in np.flatnonzero((volume != 0).any(axis=others)))


def choose_slices(patient: Patient, opts: VolumeOptions) -> tuple[int, ...]:
    """Slice indices along the plane's RAS axis, on the reference (first modality) grid."""
    kind, count = parse_slices(opts.slices)
    axis, others = opts.axis, tuple(a for a in range(3) if a != opts.axis)
    if kind == "center":
        return center_slices(_canonical_shape(_load(patient.paths[0]))[axis], count)
    reference = _canonical(patient.paths[0])
    if kind == "all-nonzero":  # the voxels are read here anyway: refuse NaN and all-zero volumes now, not later
        return nonzero_slices(voxels(patient.paths[0], reference), axis)
    seg = _on_grid(_canonical(patient.seg), reference, order=0)
    # Round to the nearest label: downsampled label maps carry interpolation ringing around 0.
    area = (seg >= 0.5).sum(axis=others)
    best = np.argsort(-area, kind="stable")[:count]
    return tuple(sorted(int(i) for i in best if area[i] > 0))


@dataclass
class _VolumeSet:
    root: Path
    opts: VolumeOptions
    patients: list[Patient]
    indices: dict[str, tuple[int, ...]]
    notes: list[str]

    def reader(self) -> VolumeReader:
        files = {p.pid: tuple(str(f) for f in p.paths) for p in self.patients}
        return VolumeReader(files, self.indices, self.opts.modalities, self.opts.fused, self.opts.normalize,
                            self.opts.axis)

    def fingerprint(self, extra: str = "") -> str:
        files = [f for p in self.patients for f in (*p.paths, *([p.seg] if p.seg else []))]
        if self.opts.labels_csv:
            files.append(Path(self.opts.labels_csv).expanduser())
        text = f"{files_fingerprint(files, self.root)}|{self.opts!r}|{extra}"
        return hashlib.sha256(text.encode()).hexdigest()

    def frame(self, modality: str | None) -> pd.DataFrame:
        plane, rows = self.opts.plane, []
        for p in self.patients:
            for i in self.indices[p.pid]:
                if modality is None:
                    rows.append((f"{p.pid}/{plane}{i:03d}", p.label, p.pid, None, f"{p.pid}|{i}"))
                else:
                    rows.append((f"{p.pid}/{modality}/{plane}{i:03d}", p.label, p.pid, None, f"{p.pid}|{modality}|{i}"))
        return pd.DataFrame(rows, columns=["sample_id", "label", "group", "split", "ref"])


def _collect(root: Path, opts: VolumeOptions) -> _VolumeSet:
    root = Path(root).expanduser()
    patients, notes = _find_patients(root, opts)
    for p in patients:  # every file's header, affine, length and place in space checked before any work starts
        files = (*p.paths, *([p.seg] if p.seg else []))
        images = [check_volume(path) for path in files]
        for path, img in zip(files[1:], images[1:]):
            problem = _disjoint(path, img, files[0], images[0])
            if problem:
                raise problem
    indices = {p.pid: choose_slices(p, opts) for p in patients}
    empty = [pid for pid, chosen in indices.items() if not chosen]
    if empty:
        what = "a tumour in the segmentation" if parse_slices(opts.slices)[0] == "tumor" else "a nonzero voxel"
        if len(empty) == len(patients):
            raise UserError(str(root), f"no slice of any patient has {what}", "choose another slices rule, e.g. center:16")
        notes.append(f"{len(empty)} patient(s) have no slice with {what} and give no samples (first: {empty[0]!r})")
    if opts.labels_csv is None and all(p.label == UNLABELLED for p in patients):
        notes.append(f"no labels: every patient is {UNLABELLED!r}; pass a labels CSV or lay out ROOT/<class>/<patient>/")
    return _VolumeSet(root, opts, patients, indices, notes)


def load_volumes(root: Path, options: VolumeOptions) -> SampleTable:
    """One row per 2D slice (per modality too in separate mode), grouped by patient, pixels read lazily."""
    vs = _collect(root, options)
    if options.fused:
        frame = vs.frame(None)
    else:
        frame = pd.concat([vs.frame(m) for m in options.modalities], ignore_index=True)
    return SampleTable(frame, vs.reader(), str(vs.root), vs.fingerprint(), notes=list(vs.notes))


def load_volumes_separate(root: Path, options: VolumeOptions) -> dict[str, SampleTable]:
    """One grey-slice table per modality (same patients, slices and labels), for comparing modalities as tasks."""
    vs = _collect(root, options)
    reader = replace(vs.reader(), fused=False)  # per-modality refs, whatever the mode
    return {m: SampleTable(vs.frame(m), reader, f"{vs.root} [{m}]", vs.fingerprint(m), notes=list(vs.notes))
            for m in options.modalities}


# ---- inspection: what the set holds and what the model will see ------------------------------------------------


def _describe_patient(pid: str, folder: Path, label: str, opts: VolumeOptions, wanted: list[str],
                      grids: dict[str, Counter], problems: list[str]) -> dict:
    files, matched, images = _niftis(folder), {}, {}
    entry: dict = {"label": label, "found": {}, "missing": [], "unreadable": [], "slices": None}
    for m in wanted:
        try:
            path = _match(files, pid, m, opts.pattern)
            img = check_volume(path) if path else None
        except UserError as exc:
            problems.append(exc.line())
            entry["unreadable"].append(m)
            continue
        if img is None:
            entry["missing"].append(m)
            continue
        first = wanted[0]
        problem = _disjoint(path, img, matched[first], images[first]) if m != first and first in matched else None
        if problem:
            problems.append(problem.line())
        matched[m], images[m] = path, img
        entry["found"][m] = path.name
        shape = "x".join(str(n) for n in img.shape[:3])
        spacing = "x".join(f"{float(z):.3g}" for z in img.header.get_zooms()[:3])
        grids[m][f"{shape} @ {spacing} mm"] += 1
    entry["other_files"] = sorted(f.name for f in files if f not in matched.values())
    if entry["missing"]:
        problems.append(f"patient {pid!r} ({folder}) lacks {', '.join(entry['missing'])}")
    elif not entry["unreadable"]:
        seg = matched.get(opts.seg_name)  # never a modality: VolumeOptions refuses that
        patient = Patient(pid, label, folder, tuple(matched[m] for m in opts.modalities), seg)
        try:
            entry["slices"] = len(choose_slices(patient, opts))
        except UserError as exc:
            problems.append(exc.line())
    return entry


def world_centre(path: Path) -> np.ndarray:
    """Centre of the head (voxels brighter than the volume's mean) in world millimetres: affine @ voxel centroid."""
    img = check_volume(path)
    data = voxels(path, img)
    # Thresholding, not intensity weights: some sequences (ADC) have a bright, nonzero background.
    centre = ndimage.center_of_mass(data.reshape(data.shape[:3]) > data.mean())
    return (img.affine @ np.r_[centre, 1.0])[:3]


def _misaligned(pid: str, entry: dict, folder: Path, opts: VolumeOptions) -> list[str]:
    """Modalities whose centre sits far from the reference's: resampling trusts headers, so it cannot fix that."""
    names = [m for m in opts.modalities if m in entry["found"]]
    if len(names) < 2 or names[0] != opts.modalities[0]:
        return []
    centres = {m: world_centre(folder / entry["found"][m]) for m in names}
    far = {m: float(np.linalg.norm(c - centres[names[0]])) for m, c in centres.items()}
    return [f"patient {pid!r}: {m}'s centre lies {mm:.0f} mm from {names[0]}'s in world space, so the headers do "
            f"not co-register them — register the scans first (e.g. ANTs, FSL FLIRT); resampling follows the headers"
            for m, mm in far.items() if mm > ALIGN_MM]


def describe_volumes(root: Path, options: VolumeOptions) -> dict:
    """For `inspect`: files found and missing per patient, grid shapes and spacings per modality, slices, labels."""
    root = Path(root).expanduser()
    found = _patient_folders(root)
    labels = _labels(found, options)
    wanted = list(options.modalities) + ([options.seg_name] if parse_slices(options.slices)[0] == "tumor" else [])
    grids: dict[str, Counter] = {m: Counter() for m in wanted}
    problems: list[str] = []
    per_patient = {pid: _describe_patient(pid, folder, labels[pid], options, wanted, grids, problems)
                   for pid, folder, _ in found}
    for pid, folder, _ in found[:ALIGN_CHECKED]:  # reads every voxel, so only a few patients
        try:
            problems += _misaligned(pid, per_patient[pid], folder, options)
        except UserError as exc:  # NaN or all-zero voxels: listed like any other problem
            problems.append(exc.line())
    slices = [e["slices"] for e in per_patient.values() if e["slices"] is not None]
    return {"root": str(root), "patients": len(found), "modalities": list(options.modalities),
            "reference": options.modalities[0], "plane": options.plane, "slices_rule": options.slices,
            "labels": dict(Counter(labels[pid] for pid, _, _ in found)),
            "grids": {m: dict(c) for m, c in grids.items()},  # "shape @ spacing mm" → patients
            "slices": {"total": int(sum(slices)), "per_patient_min": min(slices, default=0),
                       "per_patient_max": max(slices, default=0)},
            "per_patient": per_patient, "problems": problems}
