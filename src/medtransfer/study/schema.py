"""The study file: validated with pydantic, every problem reported at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from medtransfer.config import TrainConfig
from medtransfer.errors import UserError

DATA_FIELDS = ("data", "path_col", "label_col", "group_col", "split_col", "image_root", "skip_missing",
               "modalities", "modality_mode", "slices", "plane", "normalize", "labels_csv", "skip_incomplete",
               "pattern", "class_order", "test_fraction", "val_fraction")
GRID_FIELDS = ("task", "backbone", "mode", "head", "seed", "train_fraction", "folds", "fold", "out")
# Every other run setting can be given for the whole study, a dataset, a mode or a backbone.
SETTING_FIELDS = tuple(f for f in TrainConfig.model_fields if f not in DATA_FIELDS + GRID_FIELDS)

TrainSettings = create_model(  # the same fields as TrainConfig, all optional: a partial run configuration
    "TrainSettings", __config__=ConfigDict(extra="forbid"),
    **{name: (TrainConfig.model_fields[name].annotation | None, None) for name in SETTING_FIELDS},
)


DatasetSpec = create_model(  # a named dataset: DATA and its source options as for `train`, plus overrides
    "DatasetSpec", __base__=TrainSettings,
    **{name: (TrainConfig.model_fields[name].annotation, TrainConfig.model_fields[name].default)
       for name in DATA_FIELDS if name != "data"},
    data=(str, ...),
)


class BackboneSpec(TrainSettings):
    """A backbone of the grid, with its weights and any per-backbone overrides."""

    name: str


class ModeSpec(TrainSettings):
    """A transfer mode; frozen runs may list several heads fitted on one feature cache."""

    heads: list[str] = Field(default_factory=lambda: ["linear"])

    @field_validator("heads")
    @classmethod
    def _known_heads(cls, heads: list[str]) -> list[str]:
        bad = [h for h in heads if h not in ("linear", "mlp", "knn")]
        if bad or not heads:
            raise ValueError(f"heads must be a non-empty list of linear/mlp/knn, got {heads}")
        return heads


class Resources(BaseModel):
    """What one run asks of a Ray cluster."""

    model_config = ConfigDict(extra="forbid")
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    max_retries: int = Field(3, ge=0)


class Study(BaseModel):
    """A whole comparison: datasets × backbones × modes × train fractions × folds × seeds."""

    model_config = ConfigDict(extra="forbid")
    name: str = "study"
    datasets: dict[str, DatasetSpec]
    backbones: list[BackboneSpec]
    modes: dict[str, ModeSpec]
    seeds: list[int] = Field(default_factory=lambda: [0])
    folds: int = Field(0, ge=0)  # 0: the usual split; k >= 2: k-fold cross-validation, one run per fold
    train_fractions: list[float] = Field(default_factory=lambda: [1.0])
    train: TrainSettings = Field(default_factory=TrainSettings)
    resources: Resources = Field(default_factory=Resources)

    @field_validator("backbones", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """`- resnet50` is short for `- name: resnet50`."""
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("modes")
    @classmethod
    def _known_modes(cls, modes: dict[str, ModeSpec]) -> dict[str, ModeSpec]:
        bad = sorted(set(modes) - {"frozen", "finetune"})
        if bad or not modes:
            raise ValueError(f"modes are frozen and/or finetune, got {sorted(modes)}")
        return modes

    @field_validator("datasets", "backbones", "seeds", "train_fractions")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if not value:
            raise ValueError("must not be empty")
        return value


def load_study(path: Path) -> Study:
    """Read and validate a study YAML; one UserError lists every problem."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UserError(str(path), f"cannot read ({exc.strerror})", "pass an existing study YAML") from None
    except yaml.YAMLError as exc:
        raise UserError(str(path), f"is not valid YAML ({str(exc).splitlines()[0]})", "fix the syntax") from None
    if not isinstance(raw, dict):
        raise UserError(str(path), "does not hold a mapping", "see studies/demo.yaml for the layout")
    try:
        return Study(**raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise UserError(str(path), "; ".join(problems), "fix these keys (see studies/demo.yaml)") from None
