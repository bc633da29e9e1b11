"""Per-setup diagnostic figures of one task from test predictions: ROC curves, confusion matrices, reliability.

Each setup is drawn from the first replicate (lowest seed) that the tables used, at the task's largest train
fraction; a cross-validated setup from its folds' pooled held-out predictions, so a figure covers the samples of the
tables' estimate and never a run the tables left out. Numbers in legends that the tables also show (AUROC) are the
tables' own values, never recomputed from the one replicate drawn."""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, roc_curve

from medtransfer.evaluation.calibration import expected_calibration_error, reliability_curve
from medtransfer.evaluation.metrics import predicted_labels
from medtransfer.report.aggregate import Replicates
from medtransfer.report.render import ci_cell
from medtransfer.report.style import SetupStyle, new_figure, wrap, wrap_setup

RELIABILITY_BINS = 10  # test splits are often small; 15 bins leave most of them empty


@dataclass(frozen=True)
class Drawn:
    """One setup's test predictions as its figures show them, with the table's AUROC of the setup."""

    setup: str
    y: np.ndarray
    prob: np.ndarray
    classes: list[str]
    replicate: str  # "0", or "0/f1" for a fold of folds sharing one predefined test split
    pooled: bool
    auroc: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # the main table's value, low, high
    n_replicates: int = 1

    def auroc_label(self) -> str:
        """`SETUP (AUROC v [low, high])`: the main table's AUROC cell, character for character."""
        return f"{self.setup} (AUROC {ci_cell(*self.auroc)})"


def drawn(replicates: list[tuple[dict, Replicates]], setups: pd.DataFrame | None = None) -> list[Drawn]:
    """One task's setups at its largest train fraction, in the tables' order, each from its first replicate;
    `setups` (the summary's rows) supplies the AUROC that the tables report for each."""
    top = max(labels["train_fraction"] for labels, _ in replicates)
    out = []
    for labels, reps in replicates:
        if labels["train_fraction"] != top:
            continue
        auroc = (math.nan,) * 3
        if setups is not None:
            row = setups[(setups["task"] == labels["task"]) & (setups["setup"] == labels["setup"])
                         & (setups["train_fraction"] == top)].iloc[0]
            auroc = (row["auroc"], row["auroc_low"], row["auroc_high"])
        out.append(Drawn(labels["setup"], reps.y, reps.probs[0], reps.classes, reps.seeds[0], reps.pooled, auroc,
                         len(reps.seeds)))
    return out


def _which(chosen: list[Drawn]) -> str:
    """Which predictions a figure shows, for its title."""
    names = sorted({d.replicate.replace("/f", ", fold ") for d in chosen})
    text = f"seed {names[0]}" if len(names) == 1 else f"seeds {'; '.join(names)}"
    return text + (", folds pooled out of fold" if any(d.pooled for d in chosen) else "")


def roc_points(y: np.ndarray, prob: np.ndarray, positive: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of class `positive` against the rest; by default the last class (a binary task's positive)."""
    k = prob.shape[1] - 1 if positive is None else positive
    fpr, tpr, _ = roc_curve(np.asarray(y) == k, prob[:, k], pos_label=True)
    return fpr, tpr


def _roc_panel(ax: Axes, chosen: list[Drawn], style: SetupStyle, positive: int, title: str) -> None:
    for d in chosen:
        if 0 < (d.y == positive).sum() < len(d.y):  # a class with no test case (or only those) has no curve
            fpr, tpr = roc_points(d.y, d.prob, positive)
            ax.plot(fpr, tpr, color=style.colour(d.setup), linewidth=1.6, label=d.auroc_label())
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", aspect="equal")
    ax.set_title(wrap(title, 40), fontsize=9)


def roc_figure(chosen: list[Drawn], task: str, style: SetupStyle) -> Figure:
    """Binary: one ROC panel of the positive (last) class; more classes: one one-vs-rest panel per class. The shared
    legend below the panels gives each setup's AUROC exactly as the main table does (macro over classes)."""
    classes = chosen[0].classes
    binary = len(classes) == 2
    cols = 1 if binary else min(3, math.ceil(math.sqrt(len(classes))))
    rows = 1 if binary else math.ceil(len(classes) / cols)
    fig = new_figure(max(3.4 * cols + 0.8, 7.2), 3.4 * rows + 1.2 + 0.2 * len(chosen))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    panels = [(len(classes) - 1, f"positive class: {classes[-1]}")] if binary else [
        (k, f"{name} vs rest") for k, name in enumerate(classes)]
    for ax, (k, title) in zip(axes, panels):
        _roc_panel(ax, chosen, style, k, title)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    seeds = " (mean over seeds)" if max(d.n_replicates for d in chosen) > 1 else ""
    kind = "" if binary else ", one-vs-rest per class"
    # About 11 characters an inch at 10 pt: the title wraps inside the figure, never past its edges.
    fig.suptitle(wrap(f"{task}: test ROC{kind} (curves: {_which(chosen)}; legend: the main table's "
                      f"{'' if binary else 'macro '}AUROC{seeds})", int(11 * fig.get_figwidth())), fontsize=10)
    # One entry per setup, though its curve appears in every class's panel.
    handles = {text: line for ax in axes for line, text in zip(*ax.get_legend_handles_labels())}
    # Below the panels: beside them, the legend would collide with a title spanning the figure.
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", frameon=False)
    return fig


def confusion_figure(chosen: list[Drawn], task: str, style: SetupStyle) -> Figure:
    """The test confusion matrix of each setup (argmax counts, shaded by row share), in a grid."""
    cols = len(chosen) if len(chosen) <= 3 else math.ceil(math.sqrt(len(chosen)))  # 4 → 2×2, not 3 + 1
    rows = math.ceil(len(chosen) / cols)
    n_classes = max(len(d.classes) for d in chosen)
    cell = max(2.8, 0.55 * n_classes + 1.4)
    fig = new_figure(max(cell * cols + 0.8, 5.2), (cell + 0.3) * rows + 0.9)  # room for two-line panel titles
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    image = None
    for ax, d in zip(axes, chosen):
        classes = d.classes
        counts = confusion_matrix(d.y, predicted_labels(d.prob), labels=range(len(classes)))
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(counts):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
        ticks = np.arange(len(classes))
        tilted = max(map(len, classes)) > 4
        ax.set_xticks(ticks, classes, rotation=30 if tilted else 0, ha="right" if tilted else "center")
        ax.set_yticks(ticks, classes)
        # A panel's title may be no wider than its panel (about 11 characters an inch at 9 pt).
        ax.set(xlabel="predicted", ylabel="true")
        ax.set_title(wrap_setup(d.setup, int(cell * 11)), fontsize=9, color=style.colour(d.setup))
        ax.grid(False)
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[:len(chosen)]), shrink=0.8, label="share of the true class")
    fig.suptitle(wrap(f"{task}: test confusion matrices ({_which(chosen)})", int(cell * cols * 9)))
    return fig


def reliability_figure(chosen: list[Drawn], task: str, style: SetupStyle) -> Figure:
    """Accuracy against top-label confidence per setup (ECE in the legend, beside the axes), with the confidence
    histogram below."""
    fig = new_figure(8.4, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for d in chosen:
        curve = reliability_curve(d.y, d.prob, RELIABILITY_BINS)
        filled = curve["count"] > 0
        ece = expected_calibration_error(d.y, d.prob)  # plug-in, as the curve drawn; the tables give the debiased one
        colour = style.colour(d.setup)
        top.plot(curve["confidence"][filled], curve["accuracy"][filled], marker="o", color=colour,
                 label=f"{d.setup} (plug-in ECE {ece:.3f})")
        bottom.stairs(curve["count"], curve["edges"], color=colour, linewidth=1.4)
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
    # The top-label confidence is never below 1/K, so the axis starts there.
    floor = 1 / max(len(d.classes) for d in chosen)
    top.set(xlim=(floor - 0.02, 1.01), ylim=(0, 1.02), ylabel="accuracy in bin")
    top.set_title(f"{task}: reliability on test\n({RELIABILITY_BINS}-bin curve, 15-bin ECE, {_which(chosen)})")
    fig.legend(*top.get_legend_handles_labels(), loc="outside right upper", frameon=False)
    bottom.set(xlabel="top-label confidence", ylabel="samples")
    return fig
