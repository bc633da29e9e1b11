"""Summary figures per task (metric bars, data scarcity, learning curves), and the writer of every figure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from medtransfer.evaluation.metric_registry import METRIC_REGISTRY, metric_range
from medtransfer.report import diagnostics
from medtransfer.report.aggregate import Summary
from medtransfer.report.render import fmt_number
from medtransfer.report.shift import ShiftSummary
from medtransfer.report.shift_figures import shift_figures
from medtransfer.report.style import SetupStyle, metric_name, new_figure, representative_runs, save, slugs, wrap
from medtransfer.rundir import HISTORY_FILE, RunDir

RC = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5, "axes.grid": True,
      "grid.alpha": 0.3}


@dataclass
class FigureEntry:
    """One written figure: its task, what it shows, where its PNG is (its PDF beside it), and a note for its caption."""

    task: str
    title: str
    path: Path
    note: str = ""

    @property
    def pdf(self) -> Path:
        """The vector copy, for papers."""
        return self.path.with_suffix(".pdf")


def _errors(rows: pd.DataFrame, metric: str) -> np.ndarray:
    # A percentile interval need not contain the point value; matplotlib needs non-negative whisker lengths.
    value = rows[metric].to_numpy(float)
    return np.clip([value - rows[f"{metric}_low"].to_numpy(float), rows[f"{metric}_high"].to_numpy(float) - value],
                   0, None)


def metric_bars(agg: pd.DataFrame, task: str, metric: str, style: SetupStyle, level: str = "image") -> Figure:
    """Horizontal bars of `metric` with CI whiskers, one per setup that ran (largest train fraction), in the tables'
    order, units and colours; names on the axis never overlap, however many and long."""
    rows = agg[agg["task"] == task]
    rows = rows[rows["train_fraction"] == rows["train_fraction"].max()].reset_index(drop=True)
    percent = METRIC_REGISTRY.get(metric).percent if metric in METRIC_REGISTRY else False
    scale = 100 if percent else 1  # the tables' units, so a bar's label reads as its table cell
    fig = new_figure(7.5, max(2.8, 1.5 + 0.38 * len(rows)))  # a three-line title over even one bar
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]  # the tables' first row at the top
    values = scale * rows[metric].to_numpy(float)
    ax.barh(y, np.nan_to_num(values), 0.7, xerr=scale * np.nan_to_num(_errors(rows, metric)), capsize=3,
            color=[style.colour(s) for s in rows["setup"]], edgecolor="black", linewidth=0.5)
    for yk, value, high in zip(y, values, scale * rows[f"{metric}_high"].to_numpy(float)):
        ax.annotate(fmt_number(value, 1 if percent else 3) if np.isfinite(value) else "n/a",
                    (np.nan_to_num(max(value, high)), yk), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize=8)
    if metric == "auroc":
        ax.axvline(0.5 * scale, color="grey", linestyle=":", linewidth=1)
    ax.set_yticks(y, rows["setup"])
    ax.grid(axis="y", visible=False)
    unit = " (%)" if percent else ""
    ax.set_xlabel(f"test {metric_name(metric)}{unit}" + (", one pooled prediction per patient" if level == "patient"
                                                          else ""))
    if metric_range(metric) == (0.0, 1.0):
        ax.set_xlim(0, 1.15 * scale)  # room for the value beside a whisker that reaches the top
    chance = "dotted line: chance; " if metric == "auroc" else ""
    kinds = "; ".join(sorted(set(rows["ci"])))
    # Over the figure, not the axes: long setup names narrow the axes, and a title centred on them ran off the page.
    fig.suptitle(wrap(f"{task}: {level}-level test {metric_name(metric)} ({chance}{kinds})", 80), fontsize=9)
    return fig


def scarcity_curve(agg: pd.DataFrame, task: str, metric: str, style: SetupStyle) -> Figure:
    """`metric` against the fraction of training data, one line per setup, with CI error bars."""
    rows = agg[agg["task"] == task].sort_values("train_fraction")
    rows = rows[rows.groupby("setup")["train_fraction"].transform("nunique") >= 2]  # a curve needs two points
    fig = new_figure(8.4, 4.2)
    ax = fig.subplots()
    for setup, part in rows.groupby("setup"):
        ax.errorbar(100 * part["train_fraction"], part[metric], yerr=_errors(part, metric), marker="o", capsize=3,
                    color=style.colour(setup), label=setup)
    ax.set_xticks(sorted(100 * rows["train_fraction"].unique()))
    ax.set_xlabel("training data used (%)")
    if metric_range(metric) == (0.0, 1.0):
        ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"test {metric_name(metric)}")
    kinds = "; ".join(sorted(set(rows["ci"])))
    ax.set_title(wrap(f"{task}: data scarcity ({kinds})", 90), fontsize=9)
    # Below the axes: beside them, the legend would collide with the title that spans the figure.
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", frameon=False)
    return fig


def _histories(chosen: pd.DataFrame) -> tuple[list[tuple[pd.Series, pd.DataFrame, int]], list[str]]:
    """(run, history, best epoch) of each run trained by epochs, and the setups without epochs (kNN probes)."""
    drawn, epochless = [], []
    for _, run in chosen.iterrows():
        saved = RunDir(Path(run["run_dir"]))
        history = saved.history() if saved.has(HISTORY_FILE) else pd.DataFrame()
        if "epoch" not in history:  # a kNN probe's history is per k, not per epoch
            epochless.append(run["setup"])
            continue
        drawn.append((run, history, saved.metrics().best_epoch))
    return drawn, epochless


def _curve(ax: Axes, history: pd.DataFrame, column: str, best: int, colour: tuple, setup: str) -> None:
    if column not in history or not history[column].notna().any():
        return
    ax.plot(history["epoch"], history[column], marker="o", markersize=3, color=colour, label=setup)
    at = history[history["epoch"] == best]
    ax.plot(at["epoch"], at[column], marker="*", markersize=13, color=colour, markeredgecolor="black",
            linestyle="none")


def learning_curves(runs: pd.DataFrame, style: SetupStyle) -> tuple[Figure | None, str]:
    """Train and val loss and the val selection metric per epoch, one row of panels per mode (their epoch counts
    differ), the best epoch starred; first seed. Returns the figure (None when no run has epochs) and a caption note."""
    drawn, epochless = _histories(representative_runs(runs))
    note = (f"No epochs, not drawn: {', '.join(epochless)} (a kNN probe has none)." if epochless else "")
    if not drawn:
        return None, note
    modes = sorted({run["mode"] for run, _, _ in drawn}, key=lambda m: (m != "frozen", m))
    fig = new_figure(15, 3.6 * len(modes) + 0.6)
    axes = fig.subplots(len(modes), 3, squeeze=False)
    for run, history, best in drawn:
        row = axes[modes.index(run["mode"])]
        for ax, column in zip(row, ("train_loss", "val_loss", "val_metric")):
            _curve(ax, history, column, best, style.colour(run["setup"]), run["setup"])
    selects = " / ".join(metric_name(s) for s in sorted({run.get("select") or "val_metric" for run, _, _ in drawn}))
    for mode, row in zip(modes, axes):
        for ax, title in zip(row, ("train loss", "val loss", selects)):
            ax.set_title(f"{'fine-tuned' if mode == 'finetune' else 'frozen probe heads'}: {title}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = {text: line for ax in axes.ravel() for line, text in zip(*ax.get_legend_handles_labels())}
    handles["best epoch (chosen on val)"] = Line2D([], [], marker="*", markersize=11, color="grey",
                                                   markeredgecolor="black", linestyle="none")
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", frameon=False)
    chosen = pd.DataFrame([run for run, _, _ in drawn])
    fold = ", first fold" if (chosen["folds"] > 1).any() else ""
    fig.suptitle(f"{runs['task'].iloc[0]}: learning curves (seed {int(chosen['seed'].min())}{fold})")
    return fig, note


def _task_figures(runs: pd.DataFrame, summary: Summary, task: str, metric: str, style: SetupStyle,
                  shift: ShiftSummary | None = None) -> list[tuple[str, str, Figure, str]]:
    """One task's figures as (file kind, title, figure, note): image level first, then patient level where the
    task has patients; external sets and subgroups last, where the runs have them."""
    mine, agg = runs[runs["task"] == task], summary.setups
    name = metric_name(metric)
    out = [("bars", f"test {name} per setup (image level)", metric_bars(agg, task, metric, style), "")]
    patients = summary.patients
    if len(patients) and metric in patients and (patients["task"] == task).any():
        out.append(("bars_patients", f"test {name} per setup (patient level: one pooled prediction per patient)",
                    metric_bars(patients, task, metric, style, "patient"), ""))
    if (mine.groupby("setup")["train_fraction"].nunique() >= 2).any():
        out.append(("scarcity", "data scarcity", scarcity_curve(agg, task, metric, style), ""))
    chosen = diagnostics.drawn([pair for pair in summary.replicates if pair[0]["task"] == task], agg)
    out += [("roc", "ROC curves", diagnostics.roc_figure(chosen, task, style), ""),
            ("confusion", "confusion matrices", diagnostics.confusion_figure(chosen, task, style), ""),
            ("reliability", "reliability", diagnostics.reliability_figure(chosen, task, style), "")]
    figure, note = learning_curves(mine, style)
    if figure is not None:
        out.append(("learning", "learning curves", figure, note))
    return out + (shift_figures(shift, agg, task, metric, style) if shift is not None else [])


def write_figures(runs: pd.DataFrame, summary: Summary, folder: Path, style: SetupStyle,
                  metric: str = "auroc", shift: ShiftSummary | None = None) -> list[FigureEntry]:
    """Every figure of every task as PDF and 300 dpi PNG in `folder`, each setup in its one colour; scarcity
    curves only where a setup ran two or more fractions.

    Per-setup diagnostics draw the summary's replicates, so they show what the tables estimated from."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    with matplotlib.rc_context(RC):
        for task, slug in slugs(list(runs["task"].unique())).items():
            entries += [FigureEntry(task, title, save(figure, folder / f"{kind}_{slug}.png"), note)
                        for kind, title, figure, note in _task_figures(runs, summary, task, metric, style, shift)]
    return entries
