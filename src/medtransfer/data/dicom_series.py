"""DICOM series as volumes: files grouped by series, slices ordered, RAS affine, modalities matched by description."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from medtransfer.data.dicom_files import decode_pixels, frame_count, has_pixels, read_dataset
from medtransfer.errors import UserError

# Word edges are "not a letter" rather than \b: descriptions use '_' and digits as separators
# ("stealth-post_T", "t1ce"), and \b treats both as word characters.
_T1 = r"(?<![a-z])t1(?!\d)"
_T2 = r"(?<![a-z])t2(?![\d*])"  # T2* (gradient echo) is another contrast
_POST = r"(?<![a-z])(?:post|gd|gad|gado|gadolinium|ce|contrast|\+c|c\+)(?![a-z])"
_PRE = r"(?<![a-z])(?:pre|non)(?![a-z])"  # "pre-contrast" / "non-contrast" name a plain T1

DEFAULT_RULES: dict[str, str] = {
    "flair": r"flair",
    "t2": rf"^(?!.*flair).*{_T2}",
    "t1post": rf"^(?!.*{_PRE})(?=.*{_T1}).*{_POST}",
    "t1": rf"^(?=.*{_T1})(?:(?!.*{_POST})|(?=.*{_PRE}))",
}


@dataclass(frozen=True)
class SliceHeader:
    """What grouping and geometry need from one file's header."""

    path: Path
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    instance: int | None


@dataclass
class Series:
    """One DICOM series: its files in slice order plus the header fields the affine needs."""

    uid: str
    description: str
    patient_id: str
    slices: list[SliceHeader] = field(default_factory=list)
    pixel_spacing: tuple[float, float] | None = None  # (between rows, between columns), as DICOM stores it
    slice_spacing: float | None = None  # SpacingBetweenSlices, else SliceThickness: only used for one-slice series
    non_images: int = 0  # files of this series without Rows (reports, presentation states)

    @property
    def files(self) -> list[Path]:
        """Image files in slice order."""
        return [s.path for s in self.slices]

    @property
    def label(self) -> str:
        """Description and UID tail, short enough for one-line messages."""
        return f"{self.description or '<no description>'!r} (…{self.uid[-8:]})"

    def sort(self) -> None:
        """Order slices along the slice normal; by InstanceNumber (then name) when any position is missing."""
        normal = self._normal()
        if normal is not None and all(s.position is not None for s in self.slices):
            self.slices.sort(key=lambda s: (float(np.dot(s.position, normal)), s.path.name))
        else:
            self.slices.sort(key=lambda s: (s.instance if s.instance is not None else 0, s.path.name))

    def _normal(self) -> np.ndarray | None:
        orientation = self.slices[0].orientation if self.slices else None
        if orientation is None:
            return None
        return np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))

    def affine(self) -> np.ndarray:
        """4x4 voxel (column, row, slice) → RAS mm, as nibabel expects; a diagonal guess when orientation is missing."""
        if not self.slices:
            raise UserError(self.label, "series holds no images", "pick another series")
        row_spacing, col_spacing = self.pixel_spacing or (1.0, 1.0)
        orientation = self.slices[0].orientation or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        row_cos, col_cos = np.asarray(orientation[:3]), np.asarray(orientation[3:])
        positions = [s.position for s in self.slices]
        origin = np.asarray(positions[0]) if positions[0] is not None else np.zeros(3)
        if len(positions) > 1 and all(p is not None for p in positions):
            # The first-to-last step keeps gantry tilt, which normal × spacing would lose.
            step = (np.asarray(positions[-1]) - np.asarray(positions[0])) / (len(positions) - 1)
        else:
            step = np.cross(row_cos, col_cos) * (self.slice_spacing or 1.0)
        lps = np.eye(4)
        # Column index walks along the row cosine by the column spacing, and vice versa (PS3.3 C.7.6.2.1.1).
        lps[:3, 0] = row_cos * col_spacing
        lps[:3, 1] = col_cos * row_spacing
        lps[:3, 2] = step
        lps[:3, 3] = origin
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM is LPS, NIfTI/nibabel RAS


class SeriesList(list[Series]):
    """find_series' answer: a list of Series that also counts the files it skipped."""

    def __init__(self, series: Sequence[Series] = (), skipped: list[Path] | None = None) -> None:
        super().__init__(series)
        self.skipped: list[Path] = skipped or []


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _first_float(ds: Dataset, *keywords: str) -> float | None:
    for keyword in keywords:
        try:
            value = float(ds.get(keyword))
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return None


def find_series(root: Path) -> SeriesList:
    """Group the DICOM files under a folder by SeriesInstanceUID, reading headers only; non-DICOM files are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(str(root), "is not a folder", "pass a folder of DICOM files")
    by_uid: dict[str, Series] = {}
    skipped: list[Path] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
            skipped.append(path)
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid:  # DICOMDIR and other files that belong to no series
            skipped.append(path)
            continue
        series = by_uid.get(uid)
        if series is None:
            description = str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or "")
            series = by_uid[uid] = Series(uid, description.strip(), str(ds.get("PatientID", "")))
        if "Rows" not in ds:
            series.non_images += 1
            continue
        if series.pixel_spacing is None:
            spacing = _floats(ds.get("PixelSpacing"), 2)
            series.pixel_spacing = (spacing[0], spacing[1]) if spacing else None
            series.slice_spacing = _first_float(ds, "SpacingBetweenSlices", "SliceThickness")
        instance = ds.get("InstanceNumber")
        series.slices.append(SliceHeader(
            path,
            _floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
            _floats(ds.get("ImageOrientationPatient"), 6),
            int(instance) if instance not in (None, "") else None,
        ))
    if not by_uid:
        raise UserError(str(root), f"holds no DICOM series ({len(skipped)} non-DICOM files skipped)",
                        "pass the folder that contains the .dcm files")
    for series in by_uid.values():
        series.sort()
    return SeriesList(sorted(by_uid.values(), key=lambda s: (s.patient_id, s.description, s.uid)), skipped)


def _subject(series: list[Series]) -> str:
    files = [str(f) for s in series for f in s.files]
    return os.path.commonpath(files) if files else "DICOM series"


def match_modalities(series: list[Series], wanted: list[str],
                     rules: dict[str, str] | None = None) -> dict[str, Series]:
    """Pick exactly one series per wanted modality by case-insensitive regex on SeriesDescription."""
    merged = {**DEFAULT_RULES, **{k.lower(): v for k, v in (rules or {}).items()}}
    subject = _subject(series)
    found = ", ".join(s.label for s in series) or "no series"
    patterns: dict[str, re.Pattern[str]] = {}
    for name in wanted:
        if name.lower() not in merged:
            raise UserError(subject, f"no rule for modality {name!r} (known: {', '.join(sorted(merged))})",
                            f"pass rules={{{name!r}: '<regex on SeriesDescription>'}}")
        try:
            patterns[name] = re.compile(merged[name.lower()], re.IGNORECASE)
        except re.error as exc:
            raise UserError(f"rule for {name!r}", f"invalid regex {merged[name.lower()]!r} ({exc})",
                            "fix the regular expression") from None
    hits = {name: [s for s in series if pattern.search(s.description)] for name, pattern in patterns.items()}
    for name, matched in hits.items():
        if len(matched) > 1:
            raise UserError(subject, f"{len(matched)} series match {name!r}: {', '.join(s.label for s in matched)}; "
                            f"found: {found}",
                            f"narrow the {name!r} rule (rules={{{name!r}: ...}}) or remove the extra series")
        if not matched:
            raise UserError(subject, f"no series matches {name!r} (rule {merged[name.lower()]!r}); found: {found}",
                            f"pass rules={{{name!r}: ...}} matching its SeriesDescription")
    owners: dict[str, list[str]] = {}
    for name, matched in hits.items():
        owners.setdefault(matched[0].uid, []).append(name)
    for uid, names in owners.items():
        if len(names) > 1:
            label = next(s.label for s in series if s.uid == uid)
            raise UserError(subject, f"series {label} matches {' and '.join(map(repr, names))}; found: {found}",
                            "narrow the rules so each series matches one modality")
    return {name: hits[name][0] for name in wanted}


def read_volume(series: Series) -> tuple[np.ndarray, np.ndarray]:
    """Read a series as float32 (X=columns, Y=rows, Z=slices) in modality units, with its RAS affine."""
    if not series.slices:
        raise UserError(series.label, f"series holds no images ({series.non_images} non-image files)",
                        "pick a series with pixel data")
    normal, first = series._normal(), series.slices[0].orientation
    for s in series.slices:
        if first is not None and s.orientation is not None and not np.allclose(s.orientation, first, atol=1e-3):
            raise UserError(str(s.path), f"series {series.label} mixes slice orientations (a localizer?)",
                            "pick a series with one orientation")
    positions = [s.position for s in series.slices]
    if normal is not None and len(positions) > 1 and all(p is not None for p in positions):
        depths = np.round([float(np.dot(p, normal)) for p in positions], 3)
        if len(np.unique(depths)) < len(depths):
            raise UserError(series.label, f"{len(depths)} slices at only {len(np.unique(depths))} positions "
                            "(a 4D, multi-echo or repeated series)", "split the series or pick another one")
    planes = []
    for s in series.slices:
        ds = read_dataset(s.path, "volume slice")
        if frame_count(ds) > 1:
            raise UserError(str(s.path), f"is a multi-frame (enhanced) file with {frame_count(ds)} frames",
                            "convert it to single-frame slices or NIfTI (e.g. dcm2niix)")
        if not has_pixels(ds):
            raise UserError(str(s.path), f"series {series.label} file has no pixel data", "pick a series with images")
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise UserError(str(s.path), "is a colour image, not a greyscale volume slice", "pick a greyscale series")
        plane = np.asarray(apply_modality_lut(decode_pixels(ds, s.path), ds), dtype=np.float32)
        if planes and plane.T.shape != planes[0].shape:
            raise UserError(str(s.path), f"slice is {plane.shape}, the series' first is {planes[0].T.shape}",
                            "pick a series whose slices share one size")
        planes.append(plane.T)  # (rows, columns) → (X=columns, Y=rows), the axes the affine's first two columns use
    return np.stack(planes, axis=2), series.affine()
