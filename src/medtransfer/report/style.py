"""Shared figure conventions: names, colours, file names and saving (no pyplot, so no global state)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from medtransfer.evaluation.metric_registry import METRIC_REGISTRY

DPI = 120
# Test metrics by their declared labels, and the validation metrics runs select their epochs on.
METRIC_NAMES = {name: METRIC_REGISTRY.get(name).label for name in METRIC_REGISTRY} | {
    "val_auroc": "Val AUROC", "val_accuracy": "Val accuracy", "val_loss": "Val loss"}
MODE_COLOURS = {"frozen": "#1f77b4", "finetune": "#ff7f0e"}


def metric_name(metric: str) -> str:
    """A metric's display name."""
    return METRIC_NAMES.get(metric, metric)


def mode_colour(mode_label: str) -> str:
    """Frozen blue, fine-tuned orange; other probe heads get their own colours."""
    if mode_label in MODE_COLOURS:
        return MODE_COLOURS[mode_label]
    others = colormaps["tab10"].colors[2:]
    return others[sum(map(ord, mode_label)) % len(others)]


def setup_colours(setups: list[str]) -> dict[str, tuple]:
    """A distinct colour per setup, stable for a given list."""
    cmap = colormaps["tab10"]
    return {name: cmap(k % 10) for k, name in enumerate(sorted(setups))}


def slugs(tasks: list[str]) -> dict[str, str]:
    """A file-name-safe, unique slug per task name."""
    out: dict[str, str] = {}
    for task in sorted(tasks):
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", task).strip("._") or "task"
        slug, k = base, 2
        while slug in out.values():
            slug, k = f"{base}-{k}", k + 1
        out[task] = slug
    return out


def representative_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per setup for per-run figures: the task's largest train fraction, then the lowest seed and fold."""
    full = runs[runs["train_fraction"] == runs["train_fraction"].max()]
    return full.sort_values(["setup", "seed", "fold"]).groupby("setup", sort=True).head(1).reset_index(drop=True)


def new_figure(width: float, height: float) -> Figure:
    """A figure whose parts are laid out to fit (titles, legends and colour bars never overlap)."""
    return Figure(figsize=(width, height), layout="constrained")


def save(fig: Figure, path: Path) -> Path:
    """Write a PNG at the report's resolution."""
    fig.savefig(path, dpi=DPI, format="png")
    return path
