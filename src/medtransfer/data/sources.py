"""Pick the source from the form of DATA and turn it into a SampleTable: one registered reader per form.

Readers are asked in registration order and the first that claims DATA reads it; a new form is one more
`SOURCES.register(name, SourceReader(claims, load))`. Volume sets (NIfTI folders and DICOM trees) are picked by
--modalities rather than by the form of DATA, in data/load.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from medtransfer.data.folder import load_folder
from medtransfer.data.manifest import ManifestColumns, load_manifest
from medtransfer.data.npz import load_npz
from medtransfer.data.synthetic import load_synthetic
from medtransfer.data.table import SampleTable
from medtransfer.data.volume_options import VolumeOptions
from medtransfer.errors import UserError
from medtransfer.registry import Registry


@dataclass(frozen=True)
class SourceRequest:
    """What a reader may need besides DATA: manifest columns and image root, volume options, split folders."""

    columns: ManifestColumns
    image_root: str | None = None
    skip_missing: bool = False
    volumes: VolumeOptions | None = None  # how a 3D MedMNIST file becomes slices
    split_dirs: Mapping[str, str] | None = None  # which folders of an image folder are which split


@dataclass(frozen=True)
class SourceReader:
    """One form of DATA: whether a DATA string has that form, and how it becomes a SampleTable."""

    claims: Callable[[str], bool]
    load: Callable[[str, SourceRequest], SampleTable]


def _path(data: str) -> Path:
    return Path(data).expanduser()


def _existing_with_suffix(suffix: str) -> Callable[[str], bool]:
    """Claims an existing path ending in SUFFIX (any case); a missing one is left for the 'does not exist' error."""
    return lambda data: _path(data).suffix.lower() == suffix and _path(data).exists()


def _load_manifest(data: str, request: SourceRequest) -> SampleTable:
    root = _path(request.image_root) if request.image_root else None
    return load_manifest(_path(data), request.columns, root, request.skip_missing)


SOURCES: Registry[SourceReader] = Registry("data source")
SOURCES.register("synthetic", SourceReader(lambda data: data.startswith("synthetic:") or data == "synthetic",
                                           lambda data, request: load_synthetic(data)))
SOURCES.register("npz", SourceReader(_existing_with_suffix(".npz"),
                                     lambda data, request: load_npz(_path(data), request.volumes)))
SOURCES.register("csv", SourceReader(_existing_with_suffix(".csv"), _load_manifest))
SOURCES.register("folder", SourceReader(lambda data: _path(data).is_dir(),
                                        lambda data, request: load_folder(_path(data), request.split_dirs)))


def load_source(
    data: str,
    columns: ManifestColumns | None = None,
    image_root: str | None = None,
    skip_missing: bool = False,
    volumes: VolumeOptions | None = None,
    split_dirs: Mapping[str, str] | None = None,
) -> SampleTable:
    """DATA forms: `synthetic:...`, `*.npz` (MedMNIST), `*.csv` (manifest), or a folder of class subfolders
    (SPLIT_DIRS: which of its folders is which split)."""
    if split_dirs and not _path(data).is_dir():
        # Only a folder has split folders: an option that would change nothing is refused rather than ignored.
        raise UserError("--split-dirs", f"applies to image folders only, and {data} is not a folder",
                        "drop --split-dirs (a .npz keeps its own splits; a CSV manifest takes --split-col)")
    request = SourceRequest(columns or ManifestColumns(), image_root, skip_missing, volumes, split_dirs)
    for _, reader in SOURCES.items():
        if reader.claims(data):
            return reader.load(data, request)
    path = _path(data)
    if not path.exists():
        raise UserError(data, "does not exist", "pass an existing .npz, .csv, image folder, or synthetic:")
    raise UserError(data, f"unsupported file type {path.suffix!r}", "pass a .npz, a .csv manifest or a folder")
