"""The run configuration: validated once at the boundary (CLI or YAML), then trusted inside."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Literal, TypeVar, get_type_hints

from pydantic import ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from medtransfer.data.volume_options import VolumeOptions
from medtransfer.errors import UserError

# Mode-dependent defaults, resolved into config.yaml so a run records what it really used.
MODE_DEFAULTS = {
    "frozen": {"lr": 1e-3, "epochs": 100, "batch_size": 256, "augment": False},
    "finetune": {"lr": 1e-4, "epochs": 20, "batch_size": 32, "augment": True},
}


SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit

# The volume settings are VolumeOptions' own fields, declared once in the data layer: all but `modalities`, whose
# absence here means "not a volume source", and the segmentation's file name.
_VOLUME_TYPES = get_type_hints(VolumeOptions)
VolumeSettings = create_model(
    "VolumeSettings",
    **{f.name: (_VOLUME_TYPES[f.name], f.default) for f in fields(VolumeOptions)
       if f.name not in ("modalities", "seg_name")},
)


class TrainConfig(VolumeSettings):
    """Every setting of one run: one dataset, one backbone, one mode, one seed."""

    model_config = ConfigDict(extra="forbid")

    data: str
    task: str | None = None  # a name for reports; defaults to the data's file stem
    path_col: str | None = None
    label_col: str | None = None
    group_col: str | None = None
    split_col: str | None = None
    image_root: str | None = None
    skip_missing: bool = False
    # Image folders whose split folders have names we do not recognise: which folder is which split.
    split_dirs: dict[Literal["train", "val", "test"], str] | None = None
    # Exact and near-duplicate images across splits: warn (recorded), group (one group per cluster, so carved
    # splits keep a cluster together) or drop (keep one copy of each cluster).
    dedup: Literal["warn", "group", "drop"] = "warn"

    # Volume sources (NIfTI folders, one per patient): which modalities; how slices come out is VolumeSettings'.
    modalities: list[str] | None = None

    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    train_fraction: float = Field(1.0, gt=0, le=1)
    folds: int = Field(0, ge=0)  # k-fold cross-validation when >= 2: `fold` is held out
    fold: int = Field(0, ge=0)
    # Carved splits and folds are drawn with their own seed, fixed across training seeds by default, so that the
    # seeds of a study vary the training and not the test set.
    split_seed: int = Field(0, ge=0, le=SEED_MAX)
    allow_missing_classes: bool = False  # a class too rare to reach every split is a recorded warning, not an error
    # Ordinal tasks: the classes from lowest to highest. Quadratic-weighted kappa is reported only when this is
    # known (given here, or supplied by the data, as MedMNIST's ordinal sets do).
    class_order: list[str] | None = None

    backbone: str = "resnet50"
    weights: str = "imagenet"
    image_size: int | None = Field(None, ge=8, le=2048)
    pooling: Literal["auto", "cls_mean", "cls", "mean", "avg"] = "auto"

    mode: Literal["frozen", "finetune"] = "frozen"
    head: Literal["linear", "mlp", "knn"] = "linear"
    head_sweep: bool = False  # frozen: 16 heads (lr x weight decay) trained together, the best chosen on val
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float | None = Field(None, gt=0, le=1e30)  # near float32's range (3e38) torch fails before any epoch
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    schedule: Literal["cosine", "step", "none"] = "cosine"
    patience: int | None = Field(None, ge=1)
    select: Literal["val_auroc", "val_accuracy", "val_loss"] = "val_auroc"
    class_weights: bool = False
    augment: bool | None = None

    # Fine-tuning at scale: gradient accumulation, compilation, partial fine-tuning, activation memory.
    accumulate: int = Field(1, ge=1)
    compile: bool = False
    freeze_blocks: int | None = Field(None, ge=0)  # train only the last N blocks and the head (0: head only)
    lora_rank: int | None = Field(None, ge=1)  # LoRA adapters on ViT attention; the base weights stay frozen
    grad_checkpointing: bool = False

    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: int | None = Field(None, ge=0)
    seed: int = Field(0, ge=0, le=SEED_MAX)
    bootstrap: int = Field(2000, ge=100)
    patient_agg: Literal["mean", "max", "vote"] = "mean"  # pooling of image probabilities per patient
    cache_dir: str | None = None  # root of the image, feature and DICOM caches
    image_cache: bool = True  # decode each image once into a uint8 memory map
    out: str | None = None

    @field_validator("split_dirs", mode="before")
    @classmethod
    def _parse_split_dirs(cls, value: object) -> object:
        """`train=Training,test=Testing` from a command line; a mapping from YAML passes through."""
        if not isinstance(value, str):
            return value
        pairs = [part.partition("=") for part in value.split(",") if part.strip()]
        if not pairs or any(not sep or not name.strip() for _, sep, name in pairs):
            raise ValueError(f"{value!r} is not SPLIT=FOLDER,…, e.g. train=Training,test=Testing")
        splits = [split.strip().lower() for split, _, _ in pairs]
        twice = sorted({split for split in splits if splits.count(split) > 1})
        if twice:
            raise ValueError(f"{value!r} names split {', '.join(twice)} more than once; give each split one folder")
        return {split.strip().lower(): name.strip() for split, _, name in pairs}

    @model_validator(mode="after")
    def _resolve_defaults(self) -> TrainConfig:
        for name, value in MODE_DEFAULTS[self.mode].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.folds == 1 or (self.folds and self.fold >= self.folds):
            raise ValueError(f"fold must be below folds, and folds 0 or >= 2 (got fold {self.fold} of {self.folds})")
        self._check_mode_options()
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self

    def _check_mode_options(self) -> None:
        finetune_only = {"accumulate": self.accumulate > 1, "compile": self.compile,
                         "freeze_blocks": self.freeze_blocks is not None, "lora_rank": self.lora_rank is not None,
                         "grad_checkpointing": self.grad_checkpointing}
        if self.mode == "frozen" and any(finetune_only.values()):
            names = ", ".join(k for k, v in finetune_only.items() if v)
            raise ValueError(f"{names} only apply to mode finetune")
        if self.mode == "finetune" and (self.head == "knn" or self.head_sweep):
            raise ValueError("head knn and head_sweep only apply to mode frozen (they need cached features)")
        if self.head == "knn" and self.head_sweep:
            raise ValueError("head_sweep sweeps linear or mlp heads, not knn")
        if self.freeze_blocks is not None and self.lora_rank is not None:
            raise ValueError("choose freeze_blocks or lora_rank, not both")


def task_name(task: str | None, data: str) -> str:
    """A run's task name for reports: `task`, else the data's file stem (`synthetic` for generated data)."""
    return task or Path(data.removeprefix("synthetic:") or "synthetic").stem or "synthetic"


def parse_config(values: dict, origin: str = "options") -> TrainConfig:
    """Validate settings, reporting every problem in one line (pydantic collects them all)."""
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "config"
            problems.append(f"{where}: {err['msg']}")
        raise UserError(origin, "; ".join(problems), "fix these settings (see `medtransfer train --help`)") from None


T = TypeVar("T")


def from_config(cls: type[T], cfg: TrainConfig, **given: object) -> T:
    """An engine settings dataclass built from the run configuration by field name: every field of `cls` that is not
    `given` is the config's value of the same name, so each default lives in TrainConfig alone."""
    names = [f.name for f in fields(cls) if f.name not in given]
    unknown = [n for n in names if n not in TrainConfig.model_fields]
    if unknown:  # a programming error, not bad input: the settings class and the config have drifted apart
        raise TypeError(f"{cls.__name__} fields {unknown} are not TrainConfig fields; pass them explicitly")
    return cls(**{n: getattr(cfg, n) for n in names}, **given)
