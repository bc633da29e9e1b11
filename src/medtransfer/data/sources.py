"""Pick the source from the form of DATA and turn it into a SampleTable."""

from __future__ import annotations

from pathlib import Path

from medtransfer.data.folder import load_folder
from medtransfer.data.manifest import ManifestColumns, load_manifest
from medtransfer.data.npz import load_npz
from medtransfer.data.synthetic import load_synthetic
from medtransfer.data.table import SampleTable
from medtransfer.errors import UserError


def load_source(
    data: str,
    columns: ManifestColumns | None = None,
    image_root: str | None = None,
    skip_missing: bool = False,
) -> SampleTable:
    """DATA forms: `synthetic:...`, `*.npz` (MedMNIST), `*.csv` (manifest), or a folder of class subfolders."""
    if data.startswith("synthetic:") or data == "synthetic":
        return load_synthetic(data)
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(data, "does not exist", "pass an existing .npz, .csv, image folder, or synthetic:")
    if path.suffix.lower() == ".npz":
        return load_npz(path)
    if path.suffix.lower() == ".csv":
        root = Path(image_root).expanduser() if image_root else None
        return load_manifest(path, columns or ManifestColumns(), root, skip_missing)
    if path.is_dir():
        return load_folder(path)
    raise UserError(data, f"unsupported file type {path.suffix!r}", "pass a .npz, a .csv manifest or a folder")
