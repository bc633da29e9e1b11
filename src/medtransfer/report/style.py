"""Shared figure conventions: names, colours, file names and saving (no pyplot, so no global state)."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from medtransfer.evaluation.metric_registry import METRIC_REGISTRY

DPI = 300  # print resolution: journals ask for 300 dpi raster figures, beside the vector PDF
FORMATS = ("pdf", "png")  # the PDF for papers, the PNG for report.html
# Test metrics by their declared labels, and the validation metrics runs select their epochs on.
METRIC_NAMES = {name: METRIC_REGISTRY.get(name).label for name in METRIC_REGISTRY} | {
    "val_auroc": "Val AUROC", "val_accuracy": "Val accuracy", "val_loss": "Val loss"}


def metric_name(metric: str) -> str:
    """A metric's display name."""
    return METRIC_NAMES.get(metric, metric)


@dataclass(frozen=True)
class SetupStyle:
    """One colour per setup, fixed once per report from all its setups, so no figure recolours a setup."""

    colours: dict[str, tuple]

    @classmethod
    def of(cls, setups: list[str]) -> SetupStyle:
        """Colours for `setups` in the order given (the report's display order); duplicates keep their first."""
        names = list(dict.fromkeys(setups))
        cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
        return cls({name: cmap(k % cmap.N) for k, name in enumerate(names)})

    def colour(self, setup: str) -> tuple:
        """The setup's colour."""
        return self.colours[setup]


def wrap(text: str, width: int = 34, split_words: bool = False) -> str:
    """Long titles on several lines, broken at spaces (and inside a word longer than a line, if `split_words`), so
    neighbouring panels' titles never overlap."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=split_words, break_on_hyphens=False)) or text


def wrap_setup(setup: str, width: int) -> str:
    """A setup's name on several lines when long, the backbone on the first: `BACKBONE /` then the mode."""
    # A hub name (`hf-hub:ORG/NAME`) may be longer than a line and has no space to break at.
    if len(setup) <= width or " / " not in setup:
        return wrap(setup, width, split_words=True)
    backbone, rest = setup.split(" / ", 1)
    return f"{wrap(backbone, width, split_words=True)} /\n{wrap(rest, width, split_words=True)}"


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
    """Write the figure as PDF and as 300 dpi PNG beside each other (same stem); returns the PNG's path."""
    for kind in FORMATS:
        fig.savefig(path.with_suffix(f".{kind}"), dpi=DPI, format=kind)
    return path.with_suffix(".png")
