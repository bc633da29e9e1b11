"""Summary figures per task (metric bars, data scarcity, learning curves), and the writer of every figure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from medtransfer.evaluation.metric_registry import metric_range
from medtransfer.report import diagnostics
from medtransfer.report.aggregate import Summary
from medtransfer.report.style import (
    metric_name,
    mode_colour,
    new_figure,
    representative_runs,
    save,
    setup_colours,
    slugs,
)
from medtransfer.rundir import HISTORY_FILE, RunDir

RC = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5, "axes.grid": True,
      "grid.alpha": 0.3}


@dataclass
class FigureEntry:
    """One written figure: its task, what it shows, and where it is."""

    task: str
    title: str
    path: Path


def _errors(rows: pd.DataFrame, metric: str) -> np.ndarray:
    # A percentile interval need not contain the point value; matplotlib needs non-negative whisker lengths.
    value = rows[metric].to_numpy(float)
    return np.clip([value - rows[f"{metric}_low"].to_numpy(float), rows[f"{metric}_high"].to_numpy(float) - value],
                   0, None)


def metric_bars(agg: pd.DataFrame, task: str, metric: str, path: Path) -> Path:
    """Bars of `metric` with CI whiskers, grouped by backbone and coloured by mode (largest train fraction)."""
    rows = agg[agg["task"] == task]
    rows = rows[rows["train_fraction"] == rows["train_fraction"].max()]
    backbones, modes = sorted(rows["model"].unique()), sorted(rows["mode_label"].unique(), key=_mode_order)
    width = 0.8 / len(modes)
    fig = new_figure(max(4.5, 1.6 * len(backbones) * max(1, len(modes) / 2) + 2), 4.2)
    ax = fig.subplots()
    for k, mode in enumerate(modes):
        part = rows[rows["mode_label"] == mode].set_index("model").reindex(backbones)
        x = np.arange(len(backbones)) + (k - (len(modes) - 1) / 2) * width
        bars = ax.bar(x, part[metric].fillna(0), width, yerr=np.nan_to_num(_errors(part, metric)), capsize=4,
                      color=mode_colour(mode), label=mode, edgecolor="black", linewidth=0.5)
        ax.bar_label(bars, [f"{v:.3f}" if np.isfinite(v) else "n/a" for v in part[metric]], padding=2, fontsize=8)
    if metric == "auroc":
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(np.arange(len(backbones)), backbones)
    ax.set_ylabel(f"test {metric_name(metric)}")
    if metric_range(metric) == (0.0, 1.0):
        ax.set_ylim(0, 1.12)
    kinds = "; ".join(sorted(set(rows["ci"])))
    ax.set_title(f"{task}: test {metric_name(metric)}\n({kinds})", fontsize=9)
    # Below the axes: inside, it collides with the value labels of whiskers that reach the top.
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=len(modes) + 1, frameon=False)
    return save(fig, path)


def _mode_order(mode: str) -> tuple[int, str]:
    return (mode != "frozen", mode)


def scarcity_curve(agg: pd.DataFrame, task: str, metric: str, path: Path) -> Path:
    """`metric` against the fraction of training data, one line per setup, with CI error bars."""
    rows = agg[agg["task"] == task].sort_values("train_fraction")
    rows = rows[rows.groupby("setup")["train_fraction"].transform("nunique") >= 2]  # a curve needs two points
    colours = setup_colours(list(rows["setup"].unique()))
    fig = new_figure(6, 4.2)
    ax = fig.subplots()
    for setup, part in rows.groupby("setup"):
        ax.errorbar(100 * part["train_fraction"], part[metric], yerr=_errors(part, metric), marker="o", capsize=3,
                    color=colours[setup], label=setup)
    ax.set_xticks(sorted(100 * rows["train_fraction"].unique()))
    ax.set_xlabel("training data used (%)")
    if metric_range(metric) == (0.0, 1.0):
        ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"test {metric_name(metric)}")
    kinds = "; ".join(sorted(set(rows["ci"])))
    ax.set_title(f"{task}: data scarcity\n({kinds})", fontsize=9)
    ax.legend(frameon=False)
    return save(fig, path)


def learning_curves(runs: pd.DataFrame, path: Path) -> Path:
    """Train and val loss and the val selection metric per epoch, one line per setup (first seed)."""
    chosen = representative_runs(runs)
    colours = setup_colours(list(chosen["setup"]))
    fig = new_figure(13, 4)
    axes = fig.subplots(1, 3)
    selects = set()
    for _, run in chosen.iterrows():
        saved = RunDir(Path(run["run_dir"]))
        if not saved.has(HISTORY_FILE):
            continue
        history = saved.history()
        if "epoch" not in history:  # a kNN probe's history is per k, not per epoch
            continue
        selects.add(run.get("select") or "val_metric")
        for ax, column in zip(axes, ("train_loss", "val_loss", "val_metric")):
            if column in history and history[column].notna().any():
                ax.plot(history["epoch"], history[column], marker="o", markersize=3, color=colours[run["setup"]],
                        label=run["setup"])
    titles = ("train loss", "val loss", " / ".join(metric_name(s) for s in sorted(selects)))
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(frameon=False)
    fold = ", first fold" if (chosen["folds"] > 1).any() else ""
    fig.suptitle(f"{runs['task'].iloc[0]}: learning curves (seed {int(chosen['seed'].min())}{fold})")
    return save(fig, path)


def write_figures(runs: pd.DataFrame, summary: Summary, folder: Path, metric: str = "auroc") -> list[FigureEntry]:
    """Every figure of every task as PNGs in `folder`; scarcity curves only where a setup ran two or more fractions.

    Per-setup diagnostics draw the summary's replicates, so they show what the tables estimated from."""
    agg = summary.setups
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    with matplotlib.rc_context(RC):
        for task, slug in slugs(list(runs["task"].unique())).items():
            mine = runs[runs["task"] == task]
            out = [(f"test {metric_name(metric)} by backbone and mode", metric_bars(agg, task, metric,
                                                                                    folder / f"bars_{slug}.png"))]
            if (mine.groupby("setup")["train_fraction"].nunique() >= 2).any():
                out.append(("data scarcity", scarcity_curve(agg, task, metric, folder / f"scarcity_{slug}.png")))
            chosen = diagnostics.drawn([pair for pair in summary.replicates if pair[0]["task"] == task])
            for title, kind, draw in (("ROC curves", "roc", diagnostics.roc_curves),
                                      ("confusion matrices", "confusion", diagnostics.confusion_grid),
                                      ("reliability", "reliability", diagnostics.reliability_diagram)):
                out.append((title, draw(chosen, task, folder / f"{kind}_{slug}.png")))
            out.append(("learning curves", learning_curves(mine, folder / f"learning_{slug}.png")))
            entries += [FigureEntry(task, title, path) for title, path in out]
    return entries
