"""NIfTI volume sets on disk: which folders are patients, each patient's label and one file per modality."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medtransfer.data.volume_options import VolumeOptions, parse_slices
from medtransfer.errors import UserError

UNLABELLED = "unlabelled"


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


def niftis(folder: Path) -> list[Path]:
    """The NIfTI files directly in FOLDER, by name."""
    return sorted(p for p in folder.iterdir() if _is_nifti(p))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def patient_folders(root: Path) -> list[tuple[str, Path, str | None]]:
    """(patient id, folder, class from a parent folder or None); files directly in ROOT make a one-patient set."""
    if not root.is_dir():
        raise UserError(str(root), "is not a folder", "pass a folder of patient folders holding NIfTI files")
    if niftis(root):
        return [(root.name, root, None)]
    flat, nested = [], []
    for sub in _subdirs(root):
        if niftis(sub):
            flat.append((sub.name, sub, None))
        nested += [(p.name, p, sub.name) for p in _subdirs(sub) if niftis(p)]
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


def patient_labels(found: list[tuple[str, Path, str | None]], opts: VolumeOptions) -> dict[str, str]:
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


def modality_key(path: Path) -> str:
    """'T1Post.nii.gz' → 't1post', 'BraTS19_x_t1post.nii.gz' → 't1post': the bare name or the part after the last _."""
    stem = path.name.lower().removesuffix(".gz").removesuffix(".nii")
    return stem.rsplit("_", 1)[-1]


def match_file(files: list[Path], pid: str, modality: str, pattern: str) -> Path | None:
    """The file of one modality: the pattern first, else `<modality>.nii[.gz]` or `*_<modality>.nii[.gz]`, any case."""
    wanted = pattern.format(case=pid, modality=modality).lower()
    exact = [f for f in files if f.name.lower() == wanted]
    hits = exact or [f for f in files if modality_key(f) == modality.lower()]
    if len(hits) > 1:
        raise UserError(f"patient {pid!r}", f"has several files for {modality!r}: {[f.name for f in hits]}",
                        "keep one, or set a pattern that picks one")
    return hits[0] if hits else None


def find_patients(root: Path, opts: VolumeOptions) -> tuple[list[Patient], list[str]]:
    """Every patient with all files found; missing files are an error unless skip_incomplete (then a note)."""
    found = patient_folders(root)
    labels = patient_labels(found, opts)
    needs_seg = parse_slices(opts.slices)[0] == "tumor"
    wanted = wanted_files(opts)
    patients, missing = [], []
    for pid, folder, _ in found:
        files = niftis(folder)
        paths = [match_file(files, pid, m, opts.pattern) for m in wanted]
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
        seen = sorted({modality_key(f) for _, folder, _ in found for f in niftis(folder)})
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


def wanted_files(opts: VolumeOptions) -> list[str]:
    """The file names each patient needs: the modalities, and the segmentation when slices are chosen by tumour."""
    return list(opts.modalities) + ([opts.seg_name] if parse_slices(opts.slices)[0] == "tumor" else [])
