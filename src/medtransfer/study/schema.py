"""The study file: validated with pydantic, every problem reported at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from medtransfer.config import TrainConfig, field_extra
from medtransfer.errors import UserError
from medtransfer.validation import one_error, problems

GRID_FIELDS = ("task", "backbone", "mode", "head", "seed", "train_fraction", "folds", "fold", "out")
# A dataset's own settings, given only in its entry: the source options (Data, CSV and Volumes panels), unless a
# field's declaration says otherwise (`per_dataset`), and never what the grid sets.
DATA_FIELDS = tuple(name for name in TrainConfig.model_fields if name not in GRID_FIELDS and field_extra(name).get(
    "per_dataset", field_extra(name)["panel"] in ("Data", "CSV", "Volumes")))
HEADS = get_args(TrainConfig.model_fields["head"].annotation)
MODES = get_args(TrainConfig.model_fields["mode"].annotation)
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
    """A backbone of the grid, with its weights and any per-backbone overrides, on every dataset or the listed ones
    (a chest X-ray model on the chest X-ray tasks only)."""

    name: str
    datasets: list[str] | None = None


class ModeSpec(TrainSettings):
    """A transfer mode; frozen runs may list several heads fitted on one feature cache."""

    heads: list[str] = Field(default_factory=lambda: ["linear"])

    @field_validator("heads")
    @classmethod
    def _known_heads(cls, heads: list[str]) -> list[str]:
        bad = [h for h in heads if h not in HEADS]
        if bad or not heads:
            raise ValueError(f"heads must be a non-empty list of {'/'.join(HEADS)}, got {heads}")
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
        bad = sorted(set(modes) - set(MODES))
        if bad or not modes:
            raise ValueError(f"modes are {' and/or '.join(MODES)}, got {sorted(modes)}")
        return modes

    @field_validator("datasets", "backbones", "seeds", "train_fractions")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("seeds", "train_fractions")
    @classmethod
    def _no_repeats(cls, value: list) -> list:
        """A repeated seed or fraction would be the same run twice (one id, one folder)."""
        repeated = sorted({v for v in value if value.count(v) > 1})
        if repeated:
            raise ValueError(f"lists {repeated} more than once")
        return value

    @model_validator(mode="after")
    def _distinct_runs(self) -> Study:
        """Two datasets under one task name (e.g. `glioma-t2` beside glioma's separate t2), the same backbone
        entry twice, or a head listed twice would each give runs that share one id and overwrite each other."""
        tasks = [name for name, spec in self.datasets.items() for name in _task_names(name, spec)]
        problems = [f"datasets: task {t!r} comes from more than one dataset" for t in dict.fromkeys(tasks)
                    if tasks.count(t) > 1]
        problems += [f"backbones: {b.name!r} names datasets {sorted(set(b.datasets) - set(self.datasets))} the study "
                     f"does not have (it has {', '.join(self.datasets)})"
                     for b in self.backbones if b.datasets is not None and set(b.datasets) - set(self.datasets)]
        problems += [f"backbones: {b.name!r} has an empty datasets list" for b in self.backbones
                     if b.datasets is not None and not b.datasets]
        entries = [b.model_dump_json() for b in self.backbones]
        problems += [f"backbones: {b.name!r} is listed twice with the same settings"
                     for i, b in enumerate(self.backbones) if entries[i] in entries[:i]]
        for mode, spec in self.modes.items():
            problems += [f"modes.{mode}.heads: {h!r} is listed twice" for h in dict.fromkeys(spec.heads)
                         if spec.heads.count(h) > 1]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _task_names(name: str, dataset: Any) -> list[str]:
    """The task names a dataset becomes: one, or one per modality in `separate` mode (as grid.expand names them)."""
    if dataset.modalities and dataset.modality_mode == "separate":
        return [f"{name}-{m}" for m in dataset.modalities]
    return [name]


class DuplicateKeyError(yaml.YAMLError):
    """A mapping key given twice: plain YAML loading keeps the last one in silence."""

    def __init__(self, key: object, line: int, first: int) -> None:
        super().__init__(f"duplicate key {key!r} on lines {first} and {line}")
        self.key, self.line, self.first = key, line, first


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated in any mapping, at any depth."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """The mapping, after checking its own keys (merged `<<` keys may be overridden, as YAML allows)."""
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: SafeLoader itself refuses it below
            line = key_node.start_mark.line + 1
            if first is not None:
                raise DuplicateKeyError(key, line, first)
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> object:
    """A YAML file's data, refusing duplicate keys; errors as one UserError line."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(str(path), f"cannot read ({exc.strerror})", "pass an existing study YAML") from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as exc:
        raise UserError(str(path), f"{exc} (YAML would silently keep only the last)",
                        f"give each entry its own name, or merge the two {exc.key!r} entries") from None
    except yaml.YAMLError as exc:
        raise UserError(str(path), f"is not valid YAML ({str(exc).splitlines()[0]})", "fix the syntax") from None


def load_study(path: Path) -> Study:
    """Read and validate a study YAML; one UserError lists every problem."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(str(path), "does not hold a mapping", "see studies/demo.yaml for the layout")
    try:
        return Study(**raw)
    except ValidationError as exc:
        raise one_error(str(path), problems(exc), "fix these keys (see studies/demo.yaml)") from None
