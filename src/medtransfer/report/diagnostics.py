"""Per-run diagnostic figures of one task from test predictions: ROC curves, confusion matrices, reliability."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import auc, roc_curve

from medtransfer.evaluation.calibration import expected_calibration_error, reliability_curve
from medtransfer.report.predictions import label_arrays, read_predictions
from medtransfer.report.style import new_figure, representative_runs, save, setup_colours

RELIABILITY_BINS = 10  # test splits are often small; 15 bins leave most of them empty


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
    chosen = representative_runs(runs)
    colours = setup_colours(list(chosen["setup"]))
    fig = new_figure(5.6, 5)
    ax = fig.subplots()
    classes: list[str] = []
    for _, run in chosen.iterrows():
        y, prob, classes = label_arrays(read_predictions(run["run_dir"]))
        fpr, tpr = roc_points(y, prob)
        ax.plot(fpr, tpr, color=colours[run["setup"]], linewidth=1.6, label=f"{run['setup']} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    kind = f"positive class: {classes[-1]}" if len(classes) == 2 else "micro-average one-vs-rest"
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", aspect="equal")
    ax.set_title(f"{runs['task'].iloc[0]}: test ROC\n({kind}, seed {int(chosen['seed'].min())})")
    ax.legend(loc="lower right", frameon=True)
    return save(fig, path)


def _confusion(run_dir: str) -> tuple[np.ndarray, list[str]]:
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    return np.asarray(metrics["confusion"]["test"]), list(metrics["classes"])


def confusion_grid(runs: pd.DataFrame, path: Path) -> Path:
    """The test confusion matrix of each setup (counts, shaded by row share), in a grid."""
    chosen = representative_runs(runs)
    cols = len(chosen) if len(chosen) <= 3 else math.ceil(math.sqrt(len(chosen)))  # 4 → 2×2, not 3 + 1
    rows = math.ceil(len(chosen) / cols)
    n_classes = int(chosen["n_classes"].max())
    cell = max(2.6, 0.55 * n_classes + 1.4)
    fig = new_figure(cell * cols + 0.8, cell * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    image = None
    for ax, (_, run) in zip(axes, chosen.iterrows()):
        counts, classes = _confusion(run["run_dir"])
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
    fig.suptitle(f"{runs['task'].iloc[0]}: test confusion matrices (seed {int(chosen['seed'].min())})")
    return save(fig, path)


def reliability_diagram(runs: pd.DataFrame, path: Path) -> Path:
    """Accuracy against top-label confidence per setup (ECE in the legend), with the confidence histogram below."""
    chosen = representative_runs(runs)
    colours = setup_colours(list(chosen["setup"]))
    fig = new_figure(6, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for _, run in chosen.iterrows():
        y, prob, _ = label_arrays(read_predictions(run["run_dir"]))
        curve = reliability_curve(y, prob, RELIABILITY_BINS)
        filled = curve["count"] > 0
        ece = expected_calibration_error(y, prob)  # plug-in, as the curve drawn; the tables give the debiased one
        colour = colours[run["setup"]]
        top.plot(curve["confidence"][filled], curve["accuracy"][filled], marker="o", color=colour,
                 label=f"{run['setup']} (plug-in ECE {ece:.3f})")
        bottom.stairs(curve["count"], curve["edges"], color=colour, linewidth=1.4)
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
    # The top-label confidence is never below 1/K, so the axis starts there.
    floor = 1 / int(chosen["n_classes"].max())
    top.set(xlim=(floor - 0.02, 1.01), ylim=(0, 1.02), ylabel="accuracy in bin")
    top.set_title(f"{runs['task'].iloc[0]}: reliability on test ({RELIABILITY_BINS}-bin curve, 15-bin ECE, "
                  f"seed {int(chosen['seed'].min())})")
    top.legend(loc="upper left", frameon=True)
    bottom.set(xlabel="top-label confidence", ylabel="samples")
    return save(fig, path)
