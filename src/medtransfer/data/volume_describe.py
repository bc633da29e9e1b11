"""`inspect` of a NIfTI volume set: files found and missing per patient, grids per modality, misregistration."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage

from medtransfer.data.volume_io import check_volume, overlap_problem, voxels
from medtransfer.data.volume_layout import Patient, match_file, niftis, patient_folders, patient_labels, wanted_files
from medtransfer.data.volume_options import VolumeOptions
from medtransfer.data.volumes import choose_slices
from medtransfer.errors import UserError

# Sequences of one session differ by a few mm of head motion; brain centres further apart mean unregistered headers.
ALIGN_MM = 20.0
ALIGN_CHECKED = 5


def _describe_patient(pid: str, folder: Path, label: str, opts: VolumeOptions, wanted: list[str],
                      grids: dict[str, Counter], problems: list[str]) -> dict:
    files, matched, images = niftis(folder), {}, {}
    entry: dict = {"label": label, "found": {}, "missing": [], "unreadable": [], "slices": None}
    for m in wanted:
        try:
            path = match_file(files, pid, m, opts.pattern)
            img = check_volume(path) if path else None
        except UserError as exc:
            problems.append(exc.line())
            entry["unreadable"].append(m)
            continue
        if img is None:
            entry["missing"].append(m)
            continue
        first = wanted[0]
        problem = overlap_problem(path, img, matched[first], images[first]) if m != first and first in matched else None
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
    found = patient_folders(root)
    labels = patient_labels(found, options)
    wanted = wanted_files(options)
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
