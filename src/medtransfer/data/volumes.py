"""NIfTI volume sets as samples: one folder per patient, modalities resampled onto one grid, 2D slices as rows.

Layout discovery is in volume_layout.py, reading and resampling in volume_io.py, the array slicing in
volume_slices.py and the `inspect` description in volume_describe.py.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medtransfer.data.table import SampleTable
from medtransfer.data.volume_io import (
    canonical,
    check_volume,
    load_header,
    load_on_reference,
    on_grid,
    overlap_problem,
    voxels,
)
from medtransfer.data.volume_layout import UNLABELLED, Patient, find_patients
from medtransfer.data.volume_options import VolumeOptions, parse_slices
from medtransfer.data.volume_slices import center_slices, nonzero_slices, normalise, plane_slice
from medtransfer.errors import UserError
from medtransfer.hashing import files_fingerprint


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


def _canonical_shape(img: nib.spatialimages.SpatialImage) -> tuple[int, ...]:
    """The shape after RAS reorientation, from the header alone (no voxels read)."""
    ornt = nib.io_orientation(img.affine)
    shape = [0, 0, 0]
    for src, (dst, _) in enumerate(ornt):
        shape[int(dst)] = img.shape[src]
    return tuple(shape)


def choose_slices(patient: Patient, opts: VolumeOptions) -> tuple[int, ...]:
    """Slice indices along the plane's RAS axis, on the reference (first modality) grid."""
    kind, count = parse_slices(opts.slices)
    axis, others = opts.axis, tuple(a for a in range(3) if a != opts.axis)
    if kind == "center":
        return center_slices(_canonical_shape(load_header(patient.paths[0]))[axis], count)
    reference = canonical(patient.paths[0])
    if kind == "all-nonzero":  # the voxels are read here anyway: refuse NaN and all-zero volumes now, not later
        return nonzero_slices(voxels(patient.paths[0], reference), axis)
    seg = on_grid(canonical(patient.seg), reference, order=0)
    # Round to the nearest label: downsampled label maps carry interpolation ringing around 0.
    area = (seg >= 0.5).sum(axis=others)
    best = np.argsort(-area, kind="stable")[:count]
    return tuple(sorted(int(i) for i in best if area[i] > 0))


@dataclass
class _VolumeSet:
    """A set's checked patients, each one's chosen slice indices, and the notes for the user."""

    root: Path
    opts: VolumeOptions
    patients: list[Patient]
    indices: dict[str, tuple[int, ...]]
    notes: list[str]

    def reader(self) -> VolumeReader:
        """The picklable pixel reader of these patients' chosen slices."""
        files = {p.pid: tuple(str(f) for f in p.paths) for p in self.patients}
        return VolumeReader(files, self.indices, self.opts.modalities, self.opts.fused, self.opts.normalize,
                            self.opts.axis)

    def fingerprint(self, extra: str = "") -> str:
        """Content fingerprint of every file read and of the options (EXTRA: which separate table)."""
        files = [f for p in self.patients for f in (*p.paths, *([p.seg] if p.seg else []))]
        if self.opts.labels_csv:
            files.append(Path(self.opts.labels_csv).expanduser())
        text = f"{files_fingerprint(files, self.root)}|{self.opts!r}|{extra}"
        return hashlib.sha256(text.encode()).hexdigest()

    def frame(self, modality: str | None) -> pd.DataFrame:
        """One row per chosen slice: fused (MODALITY None) or of one modality."""
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
    patients, notes = find_patients(root, opts)
    for p in patients:  # every file's header, affine, length and place in space checked before any work starts
        files = (*p.paths, *([p.seg] if p.seg else []))
        images = [check_volume(path) for path in files]
        for path, img in zip(files[1:], images[1:]):
            problem = overlap_problem(path, img, files[0], images[0])
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
