"""Figures beyond the internal test split: internal vs external scatter per task, and a forest plot per task and
subgroup column (each setup in its report colour)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from medtransfer.evaluation.metric_registry import metric_range
from medtransfer.report.shift import ShiftSummary
from medtransfer.report.style import SetupStyle, metric_name, new_figure, slugs, wrap, wrap_setup

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")  # one per external set, cycled beyond ten
LEGEND_WIDTH = 34  # characters of a setup's name per legend line


def _largest_fraction(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows at the task's largest train fraction: a setup's name does not say its fraction, so one point each."""
    return rows[rows["train_fraction"] == rows["train_fraction"].max()]


def _whiskers(value: float, low: float, high: float) -> list[list[float]]:
    # A percentile interval need not contain the point value; matplotlib needs non-negative whisker lengths.
    return [[max(value - low, 0.0)], [max(high - value, 0.0)]]


def _setup_handles(setups: list[str], style: SetupStyle) -> dict[str, Line2D]:
    return {wrap_setup(s, LEGEND_WIDTH): Line2D([], [], marker="o", color=style.colour(s), linestyle="none",
                                               markeredgecolor="black", markeredgewidth=0.5) for s in setups}


def _legend(fig: Figure, handles: dict[str, Line2D]) -> None:
    # Below the axes: beside them, the legend would collide with the title that spans the figure.
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=2, frameon=False)


def external_scatter(external: pd.DataFrame, task: str, metric: str, style: SetupStyle) -> Figure:
    """Internal (x) vs external (y) `metric` with CI whiskers both ways, one point per setup and external set: colour
    per setup, marker per set, and the y = x diagonal that a setup without a gap sits on."""
    rows = _largest_fraction(external[external["task"] == task])
    names = list(dict.fromkeys(rows["external"]))
    markers = {name: MARKERS[k % len(MARKERS)] for k, name in enumerate(names)}
    fig = new_figure(7.5, 7.5)
    ax = fig.subplots()
    cols = [f"{side}_{metric}{end}" for side in ("internal", "external") for end in ("", "_low", "_high")]
    for _, r in rows.iterrows():
        x, x_low, x_high, y, y_low, y_high = (float(r[c]) for c in cols)
        if np.isfinite(x) and np.isfinite(y):
            ax.errorbar(x, y, xerr=_whiskers(x, x_low, x_high), yerr=_whiskers(y, y_low, y_high),
                        marker=markers[r["external"]], markersize=7, color=style.colour(r["setup"]),
                        markeredgecolor="black", markeredgewidth=0.5, capsize=2, linestyle="none", elinewidth=1)
    low, high = metric_range(metric)
    if not (np.isfinite(low) and np.isfinite(high)):
        values = rows[cols].to_numpy(float)
        low, high = np.nanmin(values), np.nanmax(values)
    ax.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=1)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    name = metric_name(metric)
    ax.set_xlabel(f"internal test {name}")
    ax.set_ylabel(f"external {name}")
    handles = _setup_handles(list(dict.fromkeys(rows["setup"])), style)
    handles |= {f"external set: {n}": Line2D([], [], marker=markers[n], color="grey", markeredgecolor="black",
                                             linestyle="none") for n in names}
    handles["y = x: no gap"] = Line2D([], [], linestyle="--", color="grey")
    _legend(fig, handles)
    fig.suptitle(wrap(f"{task}: internal vs external {name}; below the diagonal, the external set scores lower "
                      "(whiskers: x the main table's 95% CI, y the external set's own)", 90), fontsize=9)
    return fig


def _cases(rows: pd.DataFrame) -> str:
    counts = sorted(set(rows["n_cases"].astype(int)))
    text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    too_few = "" if rows["analysed"].any() else ": too few"
    return f"{text} case{'s' if counts[-1] != 1 else ''}{too_few}"


def forest(subgroups: pd.DataFrame, setups: pd.DataFrame, task: str, column: str, metric: str,
           style: SetupStyle) -> Figure:
    """One row per subgroup (n cases in its label; too-few ones without markers), one marker with its CI per setup,
    and each setup's overall test value as a dashed line in its colour."""
    rows = _largest_fraction(subgroups[(subgroups["task"] == task) & (subgroups["column"] == column)])
    labels = list(dict.fromkeys(rows["subgroup"]))
    names = list(dict.fromkeys(rows["setup"]))
    fig = new_figure(9.0, max(3.2, 1.6 + len(labels) * (0.3 + 0.18 * len(names))))
    ax = fig.subplots()
    step = 0.8 / max(len(names), 1)
    for j, setup in enumerate(names):
        mine = rows[(rows["setup"] == setup) & rows["analysed"]]
        y = np.array([-labels.index(s) for s in mine["subgroup"]]) + (len(names) - 1) / 2 * step - j * step
        values = mine[metric].to_numpy(float)
        whiskers = np.clip([values - mine[f"{metric}_low"].to_numpy(float),
                            mine[f"{metric}_high"].to_numpy(float) - values], 0, None)
        ax.errorbar(values, y, xerr=whiskers, marker="o", markersize=5, color=style.colour(setup), capsize=2,
                    linestyle="none", markeredgecolor="black", markeredgewidth=0.4)
        overall = setups[(setups["task"] == task) & (setups["setup"] == setup)]
        overall = overall[overall["train_fraction"] == overall["train_fraction"].max()]
        if len(overall):
            ax.axvline(float(overall[metric].iloc[0]), color=style.colour(setup), linestyle="--", linewidth=1,
                       alpha=0.8)
    ax.set_yticks([-k for k in range(len(labels))],
                  [f"{s}\n({_cases(rows[rows['subgroup'] == s])})" for s in labels])
    ax.set_ylim(-len(labels) + 0.5, 0.5)
    ax.grid(axis="y", visible=False)
    low, high = metric_range(metric)
    if np.isfinite(low) and np.isfinite(high):
        ax.set_xlim(low, high)
    name = metric_name(metric)
    ax.set_xlabel(f"test {name}")
    handles = _setup_handles(names, style)
    handles["dashed: the setup's overall test value"] = Line2D([], [], linestyle="--", color="grey")
    _legend(fig, handles)
    interval = next(iter(rows.loc[rows["analysed"], "interval"]), "")
    fig.suptitle(wrap(f"{task}: test {name} by {column} ({interval})", 90), fontsize=9)
    return fig


def shift_figures(shift: ShiftSummary, setups: pd.DataFrame, task: str, metric: str,
                  style: SetupStyle) -> list[tuple[str, str, Figure, str]]:
    """One task's scatter (where it has external sets) and forest plots (one per subgroup column), as (file kind,
    title, figure, note)."""
    out = []
    external = shift.external
    if len(external) and (external["task"] == task).any() and f"external_{metric}" in external:
        out.append(("external", f"internal vs external {metric_name(metric)}",
                    external_scatter(external, task, metric, style), ""))
    subgroups = shift.subgroups
    if len(subgroups) and metric in subgroups:
        mine = subgroups[subgroups["task"] == task]
        for column, slug in slugs(list(mine["column"].unique())).items():
            out.append((f"forest_{slug}", f"test {metric_name(metric)} per subgroup of {column}",
                        forest(subgroups, setups, task, column, metric, style), ""))
    return out
