"""The read side of a run directory: every file a finished run holds, read back typed, with one error per problem."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError

from medtransfer.config import TrainConfig
from medtransfer.data.table import METADATA_PREFIX
from medtransfer.errors import UserError
from medtransfer.rundir.files import (CONFIG_FILE, DONE, ENVIRONMENT_FILE, HISTORY_FILE, METRICS_FILE, PATIENTS_FILE,
                                      PREDICTIONS_FILE, WeightsKind, weights_file)
from medtransfer.rundir.metrics import SCHEMA_VERSION, RunMetrics

REWRITE = "pass a run directory as `medtransfer train` wrote it, or rerun the training"
# Ids, groups and labels are text however they look ("007", "1.0", "NA"); only a blank group is missing.
TEXT_COLUMNS = ("sample_id", "group", "split", "label", "predicted", "predicted_at_threshold")


def is_complete(run_dir: Path) -> bool:
    """A run is finished only when its DONE marker exists."""
    return (Path(run_dir) / DONE).is_file()


def _check_version(data: Any, source: str) -> None:
    """A record of a newer schema than this reader's asks for an upgrade (its keys may mean something else)."""
    version = data.get("schema_version", 0) if isinstance(data, dict) else 0
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise UserError(source, f"was written by a newer medtransfer (metrics schema_version {version}; this one "
                        f"reads up to {SCHEMA_VERSION})", "upgrade medtransfer (pip install -U medtransfer) to read it")


def parse_metrics(data: Any, source: str) -> RunMetrics:
    """A metrics record read from `source`: version 0 (unversioned) up to this one; a newer one asks for an upgrade."""
    _check_version(data, source)
    try:
        return RunMetrics.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise UserError(source, f"is not a run's metrics ({exc.error_count()} problem(s); first: {where}: "
                        f"{first['msg']})", REWRITE) from None


@dataclass(frozen=True)
class RunDir:
    """A run directory as `medtransfer train` writes it; each read names the file and the fix when it fails."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def file(self, name: str) -> Path:
        """The path of one of the run's files."""
        return self.path / name

    def has(self, name: str) -> bool:
        """Whether the run holds this file."""
        return self.file(name).is_file()

    def is_complete(self) -> bool:
        """Finished: its DONE marker exists."""
        return is_complete(self.path)

    def finished_at(self) -> float:
        """When the run finished (its DONE marker's modification time)."""
        return self.file(DONE).stat().st_mtime

    def _text(self, name: str) -> str:
        try:
            return self.file(name).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(str(self.file(name)), f"cannot be read ({type(exc).__name__})", REWRITE) from None

    def config(self) -> dict[str, Any]:
        """The resolved configuration as saved (a mapping; empty for an empty file)."""
        try:
            saved = yaml.safe_load(self._text(CONFIG_FILE))
        except yaml.YAMLError as exc:
            raise UserError(str(self.file(CONFIG_FILE)), f"is not valid YAML ({type(exc).__name__})", REWRITE) from None
        if saved is None:
            return {}
        if not isinstance(saved, dict):
            raise UserError(str(self.file(CONFIG_FILE)), "does not hold a run's settings (not a mapping)", REWRITE)
        return saved

    def train_config(self) -> TrainConfig:
        """The saved configuration as a TrainConfig (what the runner resolved beside it is left out)."""
        saved = self.config()
        try:
            return TrainConfig(**{k: v for k, v in saved.items() if k in TrainConfig.model_fields})
        except ValidationError as exc:
            raise UserError(str(self.file(CONFIG_FILE)), f"is not a valid run configuration ({exc.error_count()} "
                            "problem(s))", "rerun the training") from None

    def _metrics_json(self) -> Any:
        try:
            return json.loads(self._text(METRICS_FILE))
        except json.JSONDecodeError as exc:
            raise UserError(str(self.file(METRICS_FILE)), f"is not valid JSON ({exc.msg}, line {exc.lineno})",
                            REWRITE) from None

    def metrics(self) -> RunMetrics:
        """The metrics record, checked against the schema of its version."""
        return parse_metrics(self._metrics_json(), str(self.file(METRICS_FILE)))

    def classes(self) -> list[str]:
        """The class names in the model's output order, read alone: runs whose record lacks sections that RunMetrics
        requires today (older runs) still name their classes."""
        source, data = str(self.file(METRICS_FILE)), self._metrics_json()
        _check_version(data, source)
        classes = data.get("classes") if isinstance(data, dict) else None
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise UserError(source, "has no `classes` list of two or more class names", REWRITE)
        return classes

    def _csv(self, name: str, dtype: dict[str, type], na_values: dict[str, list[str]] | None = None) -> pd.DataFrame:
        try:
            return pd.read_csv(self.file(name), dtype=dtype, keep_default_na=False, na_values=na_values)
        except (OSError, ValueError) as exc:  # pandas' parser errors are ValueErrors
            raise UserError(str(self.file(name)), f"cannot be read ({type(exc).__name__}: {exc})", REWRITE) from None

    def predictions(self, split: str | None = None) -> pd.DataFrame:
        """Per-sample predictions (of one split, or all: val, test, `external:NAME`), ids, labels and subgroup
        metadata as text (a blank group or metadata value is missing), in file order."""
        try:
            header = list(pd.read_csv(self.file(PREDICTIONS_FILE), nrows=0).columns)
        except (OSError, ValueError):
            header = []  # _csv names the problem
        metadata = [c for c in header if c.startswith(METADATA_PREFIX)]
        frame = self._csv(PREDICTIONS_FILE, dict.fromkeys([*TEXT_COLUMNS, *metadata], str),
                          dict.fromkeys(["group", *metadata], [""]))
        return frame if split is None else frame[frame["split"] == split].reset_index(drop=True)

    def patient_predictions(self, split: str | None = None) -> pd.DataFrame:
        """Per-patient pooled predictions (of one split, or all); a run with groups has them."""
        frame = self._csv(PATIENTS_FILE, dict.fromkeys(TEXT_COLUMNS[1:], str))  # `group` is the patient here
        return frame if split is None else frame[frame["split"] == split].reset_index(drop=True)

    def history(self) -> pd.DataFrame:
        """The training record: one row per epoch (a kNN probe: one per k)."""
        try:
            return pd.read_csv(self.file(HISTORY_FILE))
        except (OSError, ValueError) as exc:
            raise UserError(str(self.file(HISTORY_FILE)), f"cannot be read ({type(exc).__name__})", REWRITE) from None

    def environment(self) -> dict[str, Any] | None:
        """Where the run came from (versions, git commit, device, command line, seed, threads); None for runs
        written before it was recorded."""
        if not self.has(ENVIRONMENT_FILE):
            return None
        try:
            record = json.loads(self._text(ENVIRONMENT_FILE))
        except json.JSONDecodeError as exc:
            raise UserError(str(self.file(ENVIRONMENT_FILE)), f"is not valid JSON ({exc.msg}, line {exc.lineno})",
                            REWRITE) from None
        if not isinstance(record, dict):
            raise UserError(str(self.file(ENVIRONMENT_FILE)), "does not hold a run's environment (not a mapping)",
                            REWRITE)
        return record

    def weights_path(self, kind: WeightsKind) -> Path:
        """Where the run keeps one kind of trained weights."""
        return self.file(weights_file(kind))
