"""The run configuration: validated once at the boundary (CLI or YAML), then trusted inside.

Each setting is declared once, here: its type (Literal for fixed choices), default, constraints, help text and help
panel. The `train` and `inspect` commands and the study schema are generated from these declarations."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medtransfer.data.dedup_action import Action
from medtransfer.data.volume_options import (ModalityMode, Normalizer, Plane, check_pattern, modality_problems,
                                             parse_slices)
from medtransfer.errors import UserError
from medtransfer.data.subgroup_spec import parse_subgroups
from medtransfer.validation import as_pydantic, one_error, problems

# Mode-dependent defaults, resolved into config.yaml so a run records what it really used.
MODE_DEFAULTS = {
    "frozen": {"lr": 1e-3, "epochs": 100, "batch_size": 256, "augment": False},
    "finetune": {"lr": 1e-4, "epochs": 20, "batch_size": 32, "augment": True},
}
PANELS = ("Data", "CSV", "Volumes", "Model", "Training", "Fine-tuning", "Evaluation", "Output")
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit
PatientAggregation = Literal["mean", "max", "vote"]  # also the metrics record's `patient.aggregation`
Device = Literal["auto", "cpu", "cuda"]  # also `predict --device`
Tracker = Literal["none", "tensorboard", "mlflow"]
# What --weights names besides a file: the family's published weights (`imagenet`, timm's older name for them, is
# kept for timm models) and a seeded initialisation from the model's config.
WEIGHT_KEYWORDS = ("pretrained", "imagenet", "none")
SETTINGS_FIX = "fix these settings (see `medtransfer train --help`)"


def _declare(panel: str) -> Callable[..., Any]:
    """A Field maker for one help panel; `show` is the default as help states it where the value is computed later,
    `repeat` makes the option one that is given once per value (`--external A=x --external B=y`)."""
    def declare(default: Any, description: str, *, show: str | None = None, per_dataset: bool | None = None,
                repeat: bool | None = None, **constraints: Any) -> Any:
        extra = {"panel": panel, "show": show, "per_dataset": per_dataset, "repeat": repeat}
        return Field(default, description=description, **constraints,
                     json_schema_extra={k: v for k, v in extra.items() if v is not None})
    return declare


DATA, CSV, VOLUMES, MODEL, TRAINING, FINETUNE, EVALUATION, OUTPUT = map(_declare, PANELS)


class TrainConfig(BaseModel):
    """Every setting of one run: one dataset, one backbone, one mode, one seed."""

    model_config = ConfigDict(extra="forbid")

    data: str = DATA(..., "a .npz (MedMNIST), a .csv manifest, an image folder, a NIfTI/DICOM volume set, or synthetic:")
    task: str | None = OUTPUT(None, "a name for reports", show="the data's file stem")
    path_col: str | None = CSV(None, "image path column")
    label_col: str | None = CSV(None, "label column")
    group_col: str | None = CSV(None, "patient/lesion column (splits and bootstrap by group)")
    split_col: str | None = CSV(None, "predefined split column (train/val/test)")
    image_root: str | None = CSV(None, "folder the image paths are relative to")
    skip_missing: bool = CSV(False, "drop rows whose image is missing")
    # A study may give these for all its datasets, unlike the other source settings.
    split_dirs: dict[Literal["train", "val", "test"], str] | None = DATA(
        None, "image folders whose split folders have other names: which is which, e.g. train=Training,test=Testing",
        per_dataset=False)
    dedup: Action = DATA(
        "warn", "exact and near-duplicate images across splits: warn (recorded), group (one group per cluster, so "
        "carved splits keep a cluster together) or drop (keep one copy of each cluster)", per_dataset=False)

    # Read with this run's source options, each set as a whole (never split); a property of the dataset.
    external: dict[str, str] | None = DATA(
        None, "an external test set, NAME=DATA (repeat for more): read with the same source options, classes matched "
              "by name, evaluated whole", repeat=True)

    modalities: list[str] | None = VOLUMES(None, "modalities in channel order, e.g. t1post,t2,flair (DATA is a "
                                                 "volume set of patient folders)")
    modality_mode: ModalityMode = VOLUMES("fused", "fused (3 → RGB, 1 → grey) or separate (one run per modality)")
    slices: str = VOLUMES("center:16", "center:K | all-nonzero | tumor:K (needs a seg file)")
    plane: Plane = VOLUMES("axial", "plane of the slices")
    normalize: Normalizer = VOLUMES("percentile", "percentile (0.5–99.5 clip) or zscore (inside the brain)")
    labels_csv: str | None = VOLUMES(None, "CSV of patient_id,label")
    external_labels_csv: dict[str, str] | None = VOLUMES(
        None, "an external volume set's own labels CSV, NAME=CSV (repeat for more); without one, the set's labels "
              "come from its class folders", repeat=True)
    skip_incomplete: bool = VOLUMES(False, "skip patients missing a modality")
    pattern: str = VOLUMES("{case}_{modality}.nii.gz", "file name pattern")

    test_fraction: float = EVALUATION(0.2, "test share when DATA has no test split", gt=0, lt=1, per_dataset=True)
    val_fraction: float = EVALUATION(0.2, "val share of the training pool when DATA has no val split", gt=0, lt=1,
                                     per_dataset=True)
    train_fraction: float = EVALUATION(1.0, "keep this stratified, grouped fraction of train", gt=0, le=1)
    folds: int = EVALUATION(0, "k-fold cross-validation when 2 or more (0: one split)", ge=0)
    fold: int = EVALUATION(0, "the fold held out as test, with --folds", ge=0)
    # Carved splits and folds are drawn with their own seed, fixed across training seeds by default, so that the
    # seeds of a study vary the training and not the test set.
    split_seed: int = EVALUATION(0, "seeds carved splits and folds (fixed across training seeds)", ge=0, le=SEED_MAX)
    allow_missing_classes: bool = EVALUATION(False, "a class too rare to reach every split is a recorded warning, "
                                                    "not an error")
    # Quadratic-weighted kappa is reported only when the order is known (given here, or supplied by the data, as
    # MedMNIST's ordinal sets do).
    class_order: list[str] | None = DATA(None, "ordinal task: classes lowest to highest, e.g. 0,1,2,3,4 (adds "
                                               "quadratic kappa)")

    backbone: str = MODEL("resnet50", "catalog name (resnet50, dinov2_vits14, rad_dino, …; see `medtransfer "
                                      "backbones`), a timm name, hf-hub:ORG/NAME (timm), hf:ORG/NAME or hf:FOLDER "
                                      "(transformers, needs the [hf] extra) or open_clip:NAME (needs [clip]); a hub "
                                      "name takes @REVISION")
    weights: str = MODEL("pretrained", "pretrained (the family's published weights; imagenet: the same, for timm) | "
                                       "none (random, seeded) | PATH to .safetensors/.pth (timm, torchvision, DINOv2 "
                                       "or RETFound keys; model/state_dict/teacher containers are unwrapped)")
    image_size: int | None = MODEL(None, "input size", show="from the backbone's pretrained config", ge=8, le=2048)
    pooling: Literal["auto", "cls_mean", "cls", "mean", "avg", "pooler", "proj", "pre_proj"] = MODEL(
        "auto", "feature pooling: cls_mean, cls or mean for ViTs, avg for CNNs, pooler (a transformers model's own "
                "pooler output), proj or pre_proj (an open_clip image embedding after or before its projection); "
                "auto: the model card's, else the family's first")

    mode: Literal["frozen", "finetune"] = MODEL("frozen", "frozen (features cached once, head trained) or finetune "
                                                          "(end to end)")
    head: Literal["linear", "mlp", "knn"] = MODEL("linear", "mlp: the paper's Linear→256→ReLU→Linear; knn (frozen): "
                                                            "k 10/20/50 chosen on val")
    head_sweep: bool = MODEL(False, "frozen: 16 heads (4 lr × 4 weight decay) trained together, the best on val")
    optimizer: Literal["adam", "adamw", "sgd"] = TRAINING("adam", "optimiser")
    # Near float32's range (3e38) torch fails before any epoch.
    lr: float | None = TRAINING(None, "learning rate", gt=0, le=1e30)
    weight_decay: float = TRAINING(0.0, "weight decay", ge=0)
    batch_size: int | None = TRAINING(None, "images per batch", ge=1)
    epochs: int | None = TRAINING(None, "training epochs", ge=1)
    schedule: Literal["cosine", "step", "none"] = TRAINING("cosine", "learning-rate schedule")
    patience: int | None = TRAINING(None, "stop after this many epochs without val improvement", ge=1)
    select: Literal["val_auroc", "val_accuracy", "val_loss"] = TRAINING(
        "val_auroc", "what picks the best epoch (val_accuracy: the paper's protocol)")
    class_weights: bool = TRAINING(False, "inverse-frequency class weights in the loss")
    augment: bool | None = TRAINING(None, "flip and small rotation")

    accumulate: int = FINETUNE(1, "batches per optimiser step (gradient accumulation)", ge=1)
    compile: bool = FINETUNE(False, "torch.compile the model")
    freeze_blocks: int | None = FINETUNE(None, "train only the last N blocks and the head (0: head only)", ge=0)
    lora_rank: int | None = FINETUNE(None, "LoRA adapters of this rank on ViT attention, the base weights frozen "
                                           "(needs the [lora] extra)", ge=1)
    grad_checkpointing: bool = FINETUNE(False, "recompute activations in the backward pass to save memory")

    device: Device = TRAINING("auto", "where to train")
    workers: int | None = TRAINING(None, "DataLoader workers", show="half the cores", ge=0)
    seed: int = TRAINING(0, "seeds initialisation, training and the bootstrap", ge=0, le=SEED_MAX)
    bootstrap: int = EVALUATION(2000, "bootstrap resamples for the 95% CIs", ge=100)
    patient_agg: PatientAggregation = EVALUATION("mean", "pooling of image probabilities per patient")
    # A property of the dataset (which finding is "positive"), so a study may give it per dataset.
    positive_class: str | None = EVALUATION(None, "binary tasks: the class counted as positive by ROC, sensitivity, "
                                                  "specificity, PPV, NPV and the val threshold",
                                            show="the second class", per_dataset=True)
    # Which metadata columns split the test set is a property of the dataset, so a study may give it per dataset.
    subgroups: list[str] | None = EVALUATION(
        None, "metadata columns of the manifest (or --labels-csv) to report the test metrics per subgroup, e.g. "
              "sex,age:0,50,120 (numeric columns take bin edges)", per_dataset=True)
    subgroup_min: int = EVALUATION(20, "subgroups with fewer cases (patients or lesions where the data has them, "
                                       "else images) are listed, not analysed", ge=1)
    cache_dir: str | None = OUTPUT(None, "root of the image, feature and DICOM caches", show="the user cache folder")
    image_cache: bool = OUTPUT(True, "decode each image once into a uint8 memory map")
    out: str | None = OUTPUT(None, "run directory", show="runs/<data>-<backbone>-<mode>-s<seed>")
    tracker: Tracker = OUTPUT("none", "also log per-epoch curves, settings and final metrics to tensorboard (the run "
                                      "folder's tensorboard/) or mlflow (MLFLOW_TRACKING_URI, else a store in the run "
                                      "folder); needs the [tensorboard] or [mlflow] extra")

    @field_validator("modalities", "class_order", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        """`t1,t2,flair` from a command line (empty: none); a list from YAML passes through."""
        if not isinstance(value, str):
            return value
        return [part.strip() for part in value.split(",") if part.strip()] or None

    @field_validator("external", "external_labels_csv", mode="before")
    @classmethod
    def _parse_external(cls, value: object) -> object:
        """`NAME=DATA` (or NAME=CSV) once per set from a command line; a mapping from YAML passes through."""
        if value is None or isinstance(value, dict):
            return value or None
        items = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        pairs = [str(item).partition("=") for item in items]
        bad = [str(item) for item, (name, sep, data) in zip(items, pairs) if not sep or not name.strip()
               or not data.strip()]
        if bad:
            raise ValueError(f"{bad[0]!r} is not NAME=DATA, e.g. hospital_b=/data/hospital_b.csv")
        names = [name.strip() for name, _, _ in pairs]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"names external set(s) {', '.join(twice)} more than once; give each set its own name")
        return {name: data.strip() for name, (_, _, data) in zip(names, pairs)} or None

    @field_validator("external")
    @classmethod
    def _check_external_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # The name becomes the `external:NAME` split of predictions.csv and a column of report tables.
        bad = [name for name in value or {} if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)]
        if bad:
            raise ValueError(f"external set name {bad[0]!r} must be letters, digits, '_', '.' or '-'")
        return value

    @field_validator("subgroups", mode="before")
    @classmethod
    def _parse_subgroups(cls, value: object) -> object:
        """`sex,age:0,50,120` (a number continues the bins before it) or a YAML list, as normalised COL[:EDGES] texts."""
        columns = parse_subgroups(value)  # type: ignore[arg-type]
        return [column.text for column in columns] if columns else None

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

    @field_validator("slices")
    @classmethod
    def _check_slices(cls, value: str) -> str:
        _collected(parse_slices, value)
        return value

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        return _collected(check_pattern, value)

    @model_validator(mode="after")
    def _resolve_defaults(self) -> TrainConfig:
        for name, value in MODE_DEFAULTS[self.mode].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        found = self._mode_problems() + self._split_problems() + self._external_problems()
        found += modality_problems(self.modalities, self.modality_mode) if self.modalities else []
        if found:
            raise as_pydantic(found)
        return self

    def _split_problems(self) -> list[UserError]:
        found = []
        if self.folds == 1 or (self.folds and self.fold >= self.folds):
            found.append(UserError(f"fold {self.fold} of folds {self.folds}", "fold must be below folds, and folds 0 "
                                   "or 2 or more", "use folds 0 (one split), or folds K >= 2 with fold 0 to K-1"))
        if self.val_fraction + self.test_fraction >= 0.9:
            found.append(UserError(f"val_fraction {self.val_fraction:g} + test_fraction {self.test_fraction:g}",
                                   "must leave at least 10% for training", "lower one of them"))
        return found

    def _external_problems(self) -> list[UserError]:
        labels = sorted(self.external_labels_csv or {})
        if not labels:
            return []
        if not self.modalities:
            return [UserError(f"external_labels_csv {', '.join(labels)}", "applies to volume sets (--modalities) "
                              "only; an image source carries its own labels", "drop external_labels_csv")]
        unknown = [name for name in labels if name not in (self.external or {})]
        if unknown:
            return [UserError(f"external_labels_csv {', '.join(unknown)}", "names no external set",
                              f"use the names of --external ({', '.join(self.external or {}) or 'none given'})")]
        return []

    def _mode_problems(self) -> list[UserError]:
        # A Fine-tuning option counts as given when it differs from its declared default.
        finetune_only = [name for name in fields_in("Fine-tuning")
                         if getattr(self, name) != TrainConfig.model_fields[name].default]
        found = []
        if self.mode == "frozen" and finetune_only:
            found.append(UserError("mode frozen", f"{', '.join(finetune_only)} only {_apply(finetune_only)} to mode "
                                   "finetune", "use mode finetune, or leave them at their defaults"))
        frozen_only = [name for name, given in (("head knn", self.head == "knn"), ("head_sweep", self.head_sweep))
                       if given]
        if self.mode == "finetune" and frozen_only:
            found.append(UserError("mode finetune", f"{' and '.join(frozen_only)} only {_apply(frozen_only)} to mode "
                                   "frozen, whose features are cached", "use mode frozen, or a linear or mlp head"))
        elif self.head == "knn" and self.head_sweep:
            found.append(UserError("head knn", "head_sweep sweeps linear or mlp heads, not knn",
                                   "drop head_sweep, or use head linear or mlp"))
        if self.freeze_blocks is not None and self.lora_rank is not None:
            found.append(UserError(f"freeze_blocks {self.freeze_blocks}, lora_rank {self.lora_rank}",
                                   "choose freeze_blocks or lora_rank, not both", "drop one of them"))
        return found


def _apply(names: list[str]) -> str:
    return "apply" if len(names) > 1 else "applies"


V = TypeVar("V")


def _collected(check: Callable[[str], V], value: str) -> V:
    """A data-layer check inside a pydantic validator: its UserError becomes an error pydantic collects with the
    others, keeping its subject and fix."""
    try:
        return check(value)
    except UserError as exc:
        raise as_pydantic([exc]) from None


def field_extra(name: str) -> dict[str, Any]:
    """A TrainConfig field's declared metadata: `panel`, and `show`, `per_dataset` or `repeat` where given."""
    extra = TrainConfig.model_fields[name].json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def fields_in(*panels: str) -> tuple[str, ...]:
    """The TrainConfig fields of these help panels, in declaration order."""
    return tuple(name for name in TrainConfig.model_fields if field_extra(name)["panel"] in panels)


def task_name(task: str | None, data: str) -> str:
    """A run's task name for reports: `task`, else the data's file stem (`synthetic` for generated data)."""
    return task or Path(data.removeprefix("synthetic:") or "synthetic").stem or "synthetic"


def parse_config(values: dict, origin: str = "options") -> TrainConfig:
    """Validate settings, reporting every problem in one line (pydantic collects them all)."""
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        raise one_error(origin, problems(exc), SETTINGS_FIX) from None


T = TypeVar("T")


def from_config(cls: type[T], cfg: TrainConfig, **given: object) -> T:
    """An engine settings dataclass built from the run configuration by field name: every field of `cls` that is not
    `given` is the config's value of the same name, so each default lives in TrainConfig alone."""
    # A field with its own default that the config does not have is the class's own setting (a sweep's grid, kNN's
    # ks): it keeps that default. Any other field must be a config field.
    own = {f.name for f in fields(cls) if f.name not in TrainConfig.model_fields
           and (f.default is not MISSING or f.default_factory is not MISSING)}
    names = [f.name for f in fields(cls) if f.name not in given and f.name not in own]
    unknown = [n for n in names if n not in TrainConfig.model_fields]
    if unknown:  # a programming error, not bad input: the settings class and the config have drifted apart
        raise TypeError(f"{cls.__name__} fields {unknown} are not TrainConfig fields; pass them explicitly")
    return cls(**{n: getattr(cfg, n) for n in names}, **given)
