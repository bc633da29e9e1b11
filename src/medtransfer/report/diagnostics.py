"""Per-setup diagnostic figures of one task from test predictions: ROC curves, confusion matrices, reliability.

Each setup is drawn from its lowest seed at the largest train fraction; a cross-validated setup from all its folds'
held-out predictions, so the figure covers the same samples as the pooled estimate in the tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import auc, confusion_matrix, roc_curve

from medtransfer.evaluation.calibration import expected_calibration_error, reliability_curve
from medtransfer.report.predictions import label_arrays, representative_predictions
from medtransfer.report.style import new_figure, save, setup_colours

RELIABILITY_BINS = 10  # test splits are often small; 15 bins leave most of them empty


def _drawn(chosen: list[tuple[pd.Series, pd.DataFrame, bool]]) -> str:
    """Which predictions a figure shows, for its title."""
    seeds = sorted({int(run["seed"]) for run, _, _ in chosen})
    text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    return text + (", folds pooled out of fold" if any(pooled for _, _, pooled in chosen) else "")


def roc_points(y: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr): the positive (last) class when binary, else micro-averaged one-vs-rest on the flattened one-hot."""
    if prob.shape[1] == 2:
        fpr, tpr, _ = roc_curve(y, prob[:, 1], pos_label=1)
    else:
        onehot = np.eye(prob.shape[1], dtype=int)[y]
        fpr, tpr, _ = roc_curve(onehot.ravel(), prob.ravel())
    return fpr, tpr


def roc_curves(runs: pd.DataFrame, path: Path) -> Path:
    """One test ROC curve per setup (first seed, full training data) with its AUC in the legend."""
    chosen = representative_predictions(runs)
    colours = setup_colours([run["setup"] for run, _, _ in chosen])
    fig = new_figure(5.6, 5)
    ax = fig.subplots()
    classes: list[str] = []
    for run, frame, _ in chosen:
        y, prob, classes = label_arrays(frame)
        fpr, tpr = roc_points(y, prob)
        ax.plot(fpr, tpr, color=colours[run["setup"]], linewidth=1.6, label=f"{run['setup']} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    kind = f"positive class: {classes[-1]}" if len(classes) == 2 else "micro-average one-vs-rest"
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", aspect="equal")
    ax.set_title(f"{runs['task'].iloc[0]}: test ROC\n({kind}, {_drawn(chosen)})")
    ax.legend(loc="lower right", frameon=True)
    return save(fig, path)


def confusion_grid(runs: pd.DataFrame, path: Path) -> Path:
    """The test confusion matrix of each setup (argmax counts, shaded by row share), in a grid."""
    chosen = representative_predictions(runs)
    cols = len(chosen) if len(chosen) <= 3 else math.ceil(math.sqrt(len(chosen)))  # 4 → 2×2, not 3 + 1
    rows = math.ceil(len(chosen) / cols)
    n_classes = max(int(run["n_classes"]) for run, _, _ in chosen)
    cell = max(2.6, 0.55 * n_classes + 1.4)
    fig = new_figure(max(cell * cols + 0.8, 5.2), cell * rows + 0.9)  # wide enough for the title over one panel
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    image = None
    for ax, (run, frame, _) in zip(axes, chosen):
        y, prob, classes = label_arrays(frame)
        counts = confusion_matrix(y, prob.argmax(axis=1), labels=range(len(classes)))
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(counts):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
        ticks = np.arange(len(classes))
        tilted = max(map(len, classes)) > 4
        ax.set_xticks(ticks, classes, rotation=30 if tilted else 0, ha="right" if tilted else "center")
        ax.set_yticks(ticks, classes)
        ax.set(xlabel="predicted", ylabel="true", title=run["setup"])
        ax.grid(False)
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[:len(chosen)]), shrink=0.8, label="share of the true class")
    fig.suptitle(f"{runs['task'].iloc[0]}: test confusion matrices ({_drawn(chosen)})")
    return save(fig, path)


def reliability_diagram(runs: pd.DataFrame, path: Path) -> Path:
    """Accuracy against top-label confidence per setup (ECE in the legend), with the confidence histogram below."""
    chosen = representative_predictions(runs)
    colours = setup_colours([run["setup"] for run, _, _ in chosen])
    fig = new_figure(6, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for run, frame, _ in chosen:
        y, prob, _ = label_arrays(frame)
        curve = reliability_curve(y, prob, RELIABILITY_BINS)
        filled = curve["count"] > 0
        ece = expected_calibration_error(y, prob)  # plug-in, as the curve drawn; the tables give the debiased one
        colour = colours[run["setup"]]
        top.plot(curve["confidence"][filled], curve["accuracy"][filled], marker="o", color=colour,
                 label=f"{run['setup']} (plug-in ECE {ece:.3f})")
        bottom.stairs(curve["count"], curve["edges"], color=colour, linewidth=1.4)
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
    # The top-label confidence is never below 1/K, so the axis starts there.
    floor = 1 / max(int(run["n_classes"]) for run, _, _ in chosen)
    top.set(xlim=(floor - 0.02, 1.01), ylim=(0, 1.02), ylabel="accuracy in bin")
    top.set_title(f"{runs['task'].iloc[0]}: reliability on test\n({RELIABILITY_BINS}-bin curve, 15-bin ECE, "
                  f"{_drawn(chosen)})")
    top.legend(loc="upper left", frameon=True)
    bottom.set(xlabel="top-label confidence", ylabel="samples")
    return save(fig, path)
