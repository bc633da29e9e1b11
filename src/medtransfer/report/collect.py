"""Find run directories under a folder and read each finished one into a row; unfinished ones are kept aside.

Runs are grouped into setups by every setting that varies among them, read from their saved configuration: two runs
are the same setup when all their settings but the seed and the fold are equal, and a rerun when those are equal too.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic_core import PydanticUndefined

from medtransfer.config import TrainConfig, task_name
from medtransfer.errors import UserError
from medtransfer.evaluation.metric_registry import METRICS
from medtransfer.rundir import CONFIG_FILE, DONE, METRICS_FILE, PREDICTIONS_FILE, RunDir

MARKERS = (CONFIG_FILE, METRICS_FILE)
REPORT_DIR = "report"
TIMING = ("extract_seconds", "train_seconds", "eval_seconds", "total_seconds", "images_per_second",
          "peak_memory_mb", "n_params", "cache_hit")
# Where or how fast a run computed, or how its CI was drawn, never what it computed: not part of a setup.
NOT_SETTINGS = ("out", "cache_dir", "workers", "device", "image_cache", "bootstrap", "compile", "tracker",
                # resolved by the runner from the settings (`weights_identity` of `none` names the seed)
                "timm_name", "family", "model_id", "preprocess", "pooling_resolved", "weights_identity",
                # what else a run is scored on, never what it trains: one setup with or without an external set
                "external", "external_labels_csv", "subgroups", "subgroup_min")
# The replicates of one setup: its seeds, and its folds when cross-validated.
REPLICATES = ("seed", "fold")
# What names a setup in tables and legends; any other setting that varies is named beside it.
NAMED = ("task", "backbone", "weights", "mode", "head", "train_fraction", "folds")
SETTING = "setting:"  # column prefix of the settings read from a run's saved configuration
SKIPPED_COLUMNS = ["run_dir", "reason", "task", "backbone", "mode", "seed"]


@dataclass
class RunIndex:
    """The finished runs (one row each), the run folders left out of the report with the reason, and the setups."""

    runs: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SKIPPED_COLUMNS))
    metrics: list[str] = field(default_factory=list)
    setup_keys: list[str] = field(default_factory=list)  # the columns whose values make one setup
    factors: list[str] = field(default_factory=list)  # what setups differ in: backbone, mode and any other setting


def find_run_dirs(root: Path) -> list[Path]:
    """Every folder under `root` holding a run's configuration or metrics (a run's own subfolders are not searched)."""
    found = []
    for here, dirs, files in os.walk(root):
        if any(marker in files for marker in MARKERS):
            found.append(Path(here))
            dirs.clear()
            continue
        # The report we write lives beside the runs; never mistake its files for runs.
        dirs[:] = sorted(d for d in dirs if not (Path(here) == root and d == REPORT_DIR)
                         and not d.startswith(f".{REPORT_DIR}."))
    return sorted(found)


def task_of(config: dict) -> str:
    """The task of a saved run configuration (runs from before `task` was recorded get the runner's rule)."""
    return task_name(config.get("task"), str(config.get("data") or ""))


def _labels(config: dict, run_dir: Path) -> dict:
    mode = config.get("mode")
    weights = str(config.get("weights") or "")
    return {"task": task_of(config), "backbone": config.get("backbone"), "weights": Path(weights).name or weights,
            "mode": mode, "head": config.get("head") if mode == "frozen" else None, "seed": config.get("seed"),
            "fold": int(config.get("fold") or 0), "folds": int(config.get("folds") or 0),
            "select": config.get("select"), "split_seed": config.get("split_seed"),
            "train_fraction": float(config.get("train_fraction", 1.0)), "run_dir": str(run_dir)}


# A setting that a run's saved configuration lacks was added after the run: it ran with the setting's default.
DEFAULTS = {name: f.default for name, f in TrainConfig.model_fields.items() if f.default is not PydanticUndefined}


def _settings(config: dict) -> dict:
    """Every setting that can change a result, as hashable text (lists and mappings as sorted JSON)."""
    return {f"{SETTING}{k}": v if isinstance(v, str | int | float | bool) or v is None else json.dumps(v, sort_keys=True)
            for k, v in (DEFAULTS | config).items() if k not in NOT_SETTINGS + REPLICATES}


def _row(run: RunDir, config: dict) -> dict:
    metrics = run.metrics()
    if not run.has(PREDICTIONS_FILE):
        raise FileNotFoundError(f"{PREDICTIONS_FILE} is missing")
    row = _labels(config, run.path) | _settings(config) | {f"{SETTING}task": task_of(config)}
    for name, entry in metrics.test.items():
        row.update({name: entry.value, f"{name}_low": entry.low, f"{name}_high": entry.high})
    for name, entry in metrics.val.items():
        row[f"val_{name}"] = entry.value  # the model choice between setups is made on these, never on test
    row.update({key: metrics.timing.get(key) for key in TIMING})
    row.update(_duplicates(metrics.duplicates))
    patient_threshold = metrics.patient.threshold if metrics.patient else None
    row.update({"n_test": metrics.n_test, "n_train": metrics.n_train, "n_classes": len(metrics.classes),
                "bootstrap_n": metrics.bootstrap.n, "bootstrap_seed": metrics.bootstrap.seed,
                "bootstrap_unit": metrics.bootstrap.unit,
                "threshold": metrics.threshold.value if metrics.threshold else None, "ordinal": bool(metrics.ordinal),
                "patient_threshold": patient_threshold.value if patient_threshold else None,
                "finished": run.finished_at()})
    return row


def _reason(exc: UserError) -> str:
    """A run file's problem, the file named by its name (the row names the run dir)."""
    return UserError(Path(exc.subject).name, exc.problem, exc.fix).line()


def _duplicates(record: dict | None) -> dict:
    """The run's duplicate record (data/duplicate_record.py) as columns; runs from before it have none."""
    if not record:
        return {}
    spans = {k: record["exact"].get(k, 0) + record["near"].get(k, 0) for k in ("train-val", "train-test", "val-test")}
    example = (record.get("examples") or [{}])[0]
    return {"dedup": record.get("action"), "duplicates_exact": record.get("exact_pairs"),
            "duplicates_near": record.get("near_pairs"), "duplicates_across": record.get("across_splits"),
            "duplicates_spans": ", ".join(f"{k} {v}" for k, v in spans.items() if v),
            "duplicates_dropped": sum((record.get("dropped") or {}).values()),
            "duplicates_example": f"{example['a']} ~ {example['b']}" if example else ""}


def _skip(run_dir: Path, config: dict, reason: str) -> dict:
    labels = _labels(config, run_dir) if config else {"run_dir": str(run_dir)}
    return {key: labels.get(key) for key in SKIPPED_COLUMNS} | {"reason": reason}


def setup_columns(runs: pd.DataFrame) -> list[str]:
    """The setting columns that vary among the runs (the task always): together they tell setups apart."""
    settings = [c for c in runs if c.startswith(SETTING)]
    varying = [c for c in settings if runs[c].astype(str).nunique(dropna=False) > 1]
    return [f"{SETTING}task"] + [c for c in varying if c != f"{SETTING}task"]


def _label_weights(runs: pd.DataFrame) -> pd.DataFrame:
    """Name the weights beside the backbone only where one task ran a backbone with several weight sources."""
    several = runs.groupby(["task", "backbone"])["weights"].transform("nunique") > 1
    runs.loc[several, "backbone"] = runs.loc[several, "backbone"] + " (" + runs.loc[several, "weights"] + ")"
    return runs


def _drop_reruns(runs: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, list[dict]]:
    """Keep the newest of runs that repeat one setup, seed and fold: a rerun is not an extra seed."""
    keep, skipped = [], []
    for _, same in runs.sort_values("finished").groupby(keys + list(REPLICATES), dropna=False, sort=False):
        keep.append(same.index[-1])
        for _, row in same.iloc[:-1].iterrows():
            skipped.append({key: row[key] for key in SKIPPED_COLUMNS if key != "reason"}
                           | {"reason": f"older rerun of the setup, seed and fold of {same['run_dir'].iloc[-1]}"})
    return runs.loc[keep], skipped


def _as_text(column: pd.Series) -> pd.Series:
    """Setting values as a name shows them: an unset one (null) as `none`, a whole number without `.0` (pandas
    reads an integer column with gaps as floats). Unset must stay a value: it tells setups apart as well."""
    def text(value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "none"
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return column.map(text).astype(object)


def extra_settings(runs: pd.DataFrame, keys: list[str]) -> list[str]:
    """Varying settings that the named columns do not already determine (an lr grid, an image size …)."""
    named = [f"{SETTING}{c}" for c in NAMED if f"{SETTING}{c}" in runs] or ["task"]
    base = runs[named].apply(_as_text).apply("|".join, axis=1)
    return [c for c in keys if c not in named and (_as_text(runs[c]).groupby(base).nunique() > 1).any()]


def mode_label(mode: str, head: str | None) -> str:
    """How every table and figure names a transfer mode: `fine-tuned`, or `frozen + <probe head>`."""
    return "fine-tuned" if mode == "finetune" else f"frozen + {head or 'linear'}"


def _name_setups(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`setup`: the one name of a setup in every table and figure, `BACKBONE / MODE` and every other setting that
    tells it apart; `mode_name` is the part after the backbone, what the tables' Mode column shows."""
    mode = pd.Series([mode_label(m, h if isinstance(h, str) else None) for m, h in zip(runs["mode"], runs["head"])],
                     index=runs.index, dtype=object)
    # Cross-validated setups say so: the same backbone and mode may also have run on the usual split.
    extras = runs["folds"].map(lambda k: f", {k}-fold CV" if k >= 2 else "")
    for _, task in runs.groupby("task"):  # a setting varied in one task does not rename the setups of another
        for column in extra_settings(task, keys):
            extras[task.index] += f", {column.removeprefix(SETTING)}=" + _as_text(task[column])
    # `model`: the backbone and its other varied settings, which the cost table's Backbone column shows.
    return runs.assign(mode_label=mode, mode_name=mode + extras, setup=runs["backbone"] + " / " + mode + extras,
                       model=runs["backbone"] + extras)


def _display_order(column: pd.Series) -> pd.Series:
    """Frozen before fine-tuned, and full training data before its fractions; other columns as they sort."""
    if column.name == "mode":
        return column.map({"frozen": 0, "finetune": 1}).fillna(2)
    if column.name == "train_fraction":
        return -column
    return column.fillna("")


def collect_runs(runs_dir: Path) -> RunIndex:
    """Read every run folder under `runs_dir`: finished runs become rows, the rest are listed with a reason."""
    rows, skipped = [], []
    for run_dir in find_run_dirs(Path(runs_dir)):
        run = RunDir(run_dir)
        try:
            config = run.config() if run.has(CONFIG_FILE) else {}
        except UserError as exc:
            skipped.append(_skip(run_dir, {}, _reason(exc)))
            continue
        if not run.is_complete():
            skipped.append(_skip(run_dir, config, f"incomplete: no {DONE} marker (crashed or still running)"))
            continue
        try:
            rows.append(_row(run, config))
        except UserError as exc:
            skipped.append(_skip(run_dir, config, f"unreadable run files ({_reason(exc)})"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            skipped.append(_skip(run_dir, config, f"unreadable run files ({exc.__class__.__name__}: {exc})"))
    runs = pd.DataFrame(rows)
    keys: list[str] = []
    factors = ["backbone", "mode_label"]
    if len(runs):
        keys = setup_columns(runs)
        runs, reruns = _drop_reruns(runs, keys)
        skipped += reruns
        factors += extra_settings(runs, keys)
        runs = _name_setups(_label_weights(runs), keys).sort_values(
            ["task", "backbone", "mode", "head", "train_fraction", "setup", "seed", "fold"],
            key=_display_order).reset_index(drop=True)
    present = [m for m in METRICS if m in runs] + sorted(
        {c for c in runs if f"{c}_low" in runs and not c.startswith("recall_c")} - set(METRICS))
    return RunIndex(runs, pd.DataFrame(skipped, columns=SKIPPED_COLUMNS), present, keys, factors)
