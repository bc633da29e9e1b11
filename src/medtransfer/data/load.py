"""From a run's settings to its SampleTable: image sources, or volume sets (NIfTI, or DICOM converted once)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from medtransfer.config import TrainConfig, from_config
from medtransfer.data.dicom_volumes import convert_dicom_tree, holds_dicom
from medtransfer.data.manifest import ManifestColumns, read_csv_text
from medtransfer.data.medmnist_info import finding_first
from medtransfer.data.npz_volumes import NPZ_MODALITY
from medtransfer.data.sources import load_source
from medtransfer.data.subgroup_spec import parse_subgroups
from medtransfer.data.splits import SplitPlan
from medtransfer.data.table import SampleTable, metadata_column, with_class_order, with_positive_class
from medtransfer.data.volume_options import VolumeOptions
from medtransfer.data.volumes import load_volumes
from medtransfer.engine.cache import cache_root
from medtransfer.errors import UserError
from medtransfer.hashing import digest_memo


def load_table(cfg: TrainConfig, *, whole: bool = False) -> SampleTable:
    """The configured source as a SampleTable (manifest columns only when given; volumes when modalities are),
    its classes in the ordinal order of `class_order` when given, and `positive_class` second when given (else, for
    a binary MedMNIST set that lists its finding first, the finding). `whole`: an external set, whose own split
    column, if any, is ignored rather than refused."""
    # Sources are fingerprinted by content; each file's digest is remembered beside the caches (--cache-dir).
    metadata = metadata_columns(cfg)
    with digest_memo(cache_root(cfg.cache_dir)):
        if cfg.modalities:
            table = with_patient_metadata(load_volume_table(cfg), cfg.labels_csv, metadata)
        else:
            given = {k: v for k, v in {"path": cfg.path_col, "label": cfg.label_col, "group": cfg.group_col,
                                       "split": cfg.split_col}.items() if v is not None}
            table = load_source(cfg.data, ManifestColumns(**given, metadata=metadata, whole=whole), cfg.image_root,
                                cfg.skip_missing, volume_options(cfg, NPZ_MODALITY), cfg.split_dirs)
    table = with_class_order(table, cfg.class_order) if cfg.class_order else table
    # Class index 1 is the positive class everywhere downstream (metrics, threshold, ROC, prob_<class> columns):
    # putting the chosen class there once keeps every output consistent.
    if cfg.positive_class is not None:
        return with_positive_class(table, cfg.positive_class)
    if (finding := finding_first(table.source, table.classes)) is not None and not table.ordinal:
        table = with_positive_class(table, finding)
        table.notes.append(f"positive class {finding!r}: the finding, which the dataset lists first (--positive-class "
                           "changes it)")
    return table


def metadata_columns(cfg: TrainConfig) -> tuple[str, ...]:
    """The metadata columns `subgroups` names; refused for a source that has no metadata to read them from."""
    columns = tuple(column.column for column in parse_subgroups(cfg.subgroups) or [])
    if columns and not cfg.modalities and not cfg.data.lower().endswith(".csv"):
        raise UserError(f"--subgroups {','.join(cfg.subgroups or [])}", f"reads metadata columns of a CSV manifest "
                        f"(or of --labels-csv for a volume set), and {cfg.data} has none",
                        "list the images in a CSV manifest with the metadata columns, or drop --subgroups")
    if columns and cfg.modalities and cfg.labels_csv is None:
        raise UserError(f"--subgroups {','.join(cfg.subgroups or [])}", "reads a volume set's metadata from "
                        "--labels-csv, which is not given", "pass --labels-csv with patient_id, label and the columns")
    return columns


def with_patient_metadata(table: SampleTable, labels_csv: str | None, columns: tuple[str, ...]) -> SampleTable:
    """A volume set's slices with their patient's metadata columns from the labels CSV (one row per patient)."""
    if not columns or labels_csv is None:
        return table
    path = Path(labels_csv).expanduser()
    rows = read_csv_text(path)
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise UserError(str(path), f"has no column(s) {missing} named by --subgroups; columns are {list(rows.columns)}",
                        "add the columns (one value per patient), or fix --subgroups")
    by_patient = rows.assign(patient_id=rows["patient_id"].str.strip()).set_index("patient_id")
    frame = table.frame.copy()
    for column in columns:
        frame[metadata_column(column)] = frame["group"].map(by_patient[column]).to_numpy()
    return replace(table, frame=frame, notes=list(table.notes))


def resolve_positive_class(cfg: TrainConfig, table: SampleTable) -> str | None:
    """The class a binary task counts as positive (its second class), for the resolved config; None for more
    classes. TABLE is load_table(CFG)'s."""
    positive = table.classes[1] if len(table.classes) == 2 else None
    if cfg.positive_class is not None and cfg.positive_class.strip() != positive:
        raise ValueError(f"the table's positive class {positive!r} is not the configured {cfg.positive_class!r}: "
                         "pass the table load_table built from this config")
    return positive


def split_plan(cfg: TrainConfig) -> SplitPlan:
    """How a run's data is split: carved with the split seed, which stays fixed when only the training seed varies."""
    return from_config(SplitPlan, cfg)


def volume_options(cfg: TrainConfig, modalities: tuple[str, ...] = ()) -> VolumeOptions:
    """The volume settings of a run, by field name from its configuration; MODALITIES stand in when the run names
    none (a 3D MedMNIST file's one grey channel)."""
    return from_config(VolumeOptions, cfg, modalities=tuple(cfg.modalities or modalities))


def load_volume_table(cfg: TrainConfig) -> SampleTable:
    """Slices of NIfTI volumes; one run uses fused channels or a single modality."""
    options = volume_options(cfg)
    if cfg.split_dirs:
        raise UserError("--split-dirs", "maps split folders of an image folder, not of a volume set",
                        "drop --split-dirs; volume sets are split by patient")
    if not options.fused and len(options.modalities) > 1:
        raise UserError(f"--modalities {','.join(options.modalities)}", "separate mode means one run per modality",
                        "train one modality at a time, or use a study (`medtransfer run`), which expands them")
    return load_volumes(volume_root(cfg), options)


def volume_root(cfg: TrainConfig) -> Path:
    """The NIfTI folder of a volume source; a DICOM tree is converted once (cached) and read from there."""
    root = Path(cfg.data)
    if root.is_dir() and not any(root.rglob("*.nii*")) and holds_dicom(root):
        cache = cache_root(cfg.cache_dir) / "dicom-volumes"
        return convert_dicom_tree(root, tuple(cfg.modalities or ()), cache)
    return root
