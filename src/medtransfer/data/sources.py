"""Pick the source from the form of DATA and turn it into a SampleTable."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from medtransfer.data.folder import load_folder
from medtransfer.data.manifest import ManifestColumns, load_manifest
from medtransfer.data.npz import load_npz
from medtransfer.data.synthetic import load_synthetic
from medtransfer.data.table import SampleTable
from medtransfer.data.volume_options import VolumeOptions
from medtransfer.errors import UserError


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
    if split_dirs and not Path(data).expanduser().is_dir():
        # Only a folder has split folders: an option that would change nothing is refused rather than ignored.
        raise UserError("--split-dirs", f"applies to image folders only, and {data} is not a folder",
                        "drop --split-dirs (a .npz keeps its own splits; a CSV manifest takes --split-col)")
    if data.startswith("synthetic:") or data == "synthetic":
        return load_synthetic(data)
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(data, "does not exist", "pass an existing .npz, .csv, image folder, or synthetic:")
    if path.suffix.lower() == ".npz":  # VOLUMES: how a 3D MedMNIST file becomes slices
        return load_npz(path, volumes)
    if path.suffix.lower() == ".csv":
        root = Path(image_root).expanduser() if image_root else None
        return load_manifest(path, columns or ManifestColumns(), root, skip_missing)
    if path.is_dir():
        return load_folder(path, split_dirs)
    raise UserError(data, f"unsupported file type {path.suffix!r}", "pass a .npz, a .csv manifest or a folder")
