"""Find run directories under a folder and read each finished one into a row; unfinished ones are kept aside."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from medtransfer.config import task_name
from medtransfer.evaluation.metrics import METRICS
from medtransfer.rundir import DONE

MARKERS = ("config.yaml", "metrics.json")
REPORT_DIR = "report"
TIMING = ("extract_seconds", "train_seconds", "eval_seconds", "total_seconds", "images_per_second",
          "peak_memory_mb", "n_params", "cache_hit")
# What makes two runs "the same run": a second one with this key is a rerun, not another seed.
RUN_KEY = ["task", "backbone", "weights", "mode", "head", "train_fraction", "seed"]
SKIPPED_COLUMNS = ["run_dir", "reason", "task", "backbone", "mode", "seed"]


@dataclass
class RunIndex:
    """The finished runs (one row each) and the run folders left out of the report, with the reason."""

    runs: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SKIPPED_COLUMNS))
    metrics: list[str] = field(default_factory=list)


def find_run_dirs(root: Path) -> list[Path]:
    """Every folder under `root` holding config.yaml or metrics.json (a run's own subfolders are not searched)."""
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
    """The task of a saved config.yaml (runs from before `task` was recorded get the runner's rule)."""
    return task_name(config.get("task"), str(config.get("data") or ""))


def _read_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _labels(config: dict, run_dir: Path) -> dict:
    mode = config.get("mode")
    weights = str(config.get("weights") or "")
    return {"task": task_of(config), "backbone": config.get("backbone"), "weights": Path(weights).name or weights,
            "mode": mode, "head": config.get("head") if mode == "frozen" else None, "seed": config.get("seed"),
            "select": config.get("select"),
            "train_fraction": float(config.get("train_fraction", 1.0)), "run_dir": str(run_dir)}


def _row(run_dir: Path, config: dict) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if not (run_dir / "predictions.csv").is_file():
        raise FileNotFoundError("predictions.csv is missing")
    row = _labels(config, run_dir)
    for name, entry in metrics["test"].items():
        row.update({name: entry["value"], f"{name}_low": entry["low"], f"{name}_high": entry["high"]})
    timing = metrics.get("timing", {})
    row.update({key: timing.get(key) for key in TIMING})
    boot = metrics.get("bootstrap", {})
    row.update({"n_test": metrics.get("n_test"), "n_train": metrics.get("n_train"),
                "n_classes": len(metrics.get("classes", [])), "bootstrap_n": boot.get("n"),
                "bootstrap_seed": boot.get("seed"), "bootstrap_unit": boot.get("unit"),
                "finished": (run_dir / DONE).stat().st_mtime})
    return row


def _skip(run_dir: Path, config: dict, reason: str) -> dict:
    labels = _labels(config, run_dir) if config else {"run_dir": str(run_dir)}
    return {key: labels.get(key) for key in SKIPPED_COLUMNS} | {"reason": reason}


def _label_weights(runs: pd.DataFrame) -> pd.DataFrame:
    """Name the weights beside the backbone only where one task ran a backbone with several weight sources."""
    several = runs.groupby(["task", "backbone"])["weights"].transform("nunique") > 1
    runs.loc[several, "backbone"] = runs.loc[several, "backbone"] + " (" + runs.loc[several, "weights"] + ")"
    return runs


def _drop_reruns(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Keep the newest of runs that repeat one configuration and seed: a rerun is not an extra seed."""
    keep, skipped = [], []
    for _, same in runs.sort_values("finished").groupby(RUN_KEY, dropna=False, sort=False):
        keep.append(same.index[-1])
        for _, row in same.iloc[:-1].iterrows():
            skipped.append({key: row[key] for key in SKIPPED_COLUMNS if key != "reason"}
                           | {"reason": f"older rerun of the configuration and seed of {same['run_dir'].iloc[-1]}"})
    return runs.loc[keep], skipped


def _name_setups(runs: pd.DataFrame) -> pd.DataFrame:
    """`setup`: one short name per backbone × mode (× probe head) for legends and pairwise tables."""
    mode = runs["mode"].where(runs["head"].isna() | (runs["head"] == "linear"), "frozen-" + runs["head"].fillna(""))
    return runs.assign(mode_label=mode, setup=runs["backbone"] + " / " + mode)


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
        try:
            config = _read_config(run_dir)
        except (OSError, yaml.YAMLError) as exc:
            skipped.append(_skip(run_dir, {}, f"unreadable config.yaml ({exc.__class__.__name__})"))
            continue
        if not (run_dir / DONE).is_file():
            skipped.append(_skip(run_dir, config, "incomplete: no DONE marker (crashed or still running)"))
            continue
        try:
            rows.append(_row(run_dir, config))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            skipped.append(_skip(run_dir, config, f"unreadable run files ({exc.__class__.__name__}: {exc})"))
    runs = pd.DataFrame(rows)
    if len(runs):
        runs, reruns = _drop_reruns(runs)
        skipped += reruns
        runs = _name_setups(_label_weights(runs)).sort_values(
            ["task", "backbone", "mode", "head", "train_fraction", "seed"], key=_display_order).reset_index(drop=True)
    present = [m for m in METRICS if m in runs] + sorted({c for c in runs if f"{c}_low" in runs} - set(METRICS))
    return RunIndex(runs, pd.DataFrame(skipped, columns=SKIPPED_COLUMNS), present)

