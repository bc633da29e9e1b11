"""Per-setup diagnostic figures of one task from test predictions: ROC curves, confusion matrices, reliability.

Each setup is drawn from the first replicate (lowest seed) that the tables used, at the task's largest train
fraction; a cross-validated setup from its folds' pooled held-out predictions, so a figure covers the samples of the
tables' estimate and never a run the tables left out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import auc, confusion_matrix, roc_curve

from medtransfer.evaluation.calibration import expected_calibration_error, reliability_curve
from medtransfer.evaluation.metrics import predicted_labels
from medtransfer.report.aggregate import Replicates
from medtransfer.report.style import new_figure, save, setup_colours

RELIABILITY_BINS = 10  # test splits are often small; 15 bins leave most of them empty


@dataclass(frozen=True)
class Drawn:
    """One setup's test predictions as its figures show them."""

    setup: str
    y: np.ndarray
    prob: np.ndarray
    classes: list[str]
    replicate: str  # "0", or "0/f1" for a fold of folds sharing one predefined test split
    pooled: bool


def drawn(replicates: list[tuple[dict, Replicates]]) -> list[Drawn]:
    """One task's setups at its largest train fraction, by name, each from its first replicate."""
    top = max(labels["train_fraction"] for labels, _ in replicates)
    chosen = sorted(((labels, reps) for labels, reps in replicates if labels["train_fraction"] == top),
                    key=lambda pair: pair[0]["setup"])
    return [Drawn(labels["setup"], reps.y, reps.probs[0], reps.classes, reps.seeds[0], reps.pooled)
            for labels, reps in chosen]


def _which(chosen: list[Drawn]) -> str:
    """Which predictions a figure shows, for its title."""
    names = sorted({d.replicate.replace("/f", ", fold ") for d in chosen})
    text = f"seed {names[0]}" if len(names) == 1 else f"seeds {'; '.join(names)}"
    return text + (", folds pooled out of fold" if any(d.pooled for d in chosen) else "")


def roc_points(y: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr): the positive (last) class when binary, else micro-averaged one-vs-rest on the flattened one-hot."""
    if prob.shape[1] == 2:
        fpr, tpr, _ = roc_curve(y, prob[:, 1], pos_label=1)
    else:
        onehot = np.eye(prob.shape[1], dtype=int)[y]
        fpr, tpr, _ = roc_curve(onehot.ravel(), prob.ravel())
    return fpr, tpr


def roc_curves(chosen: list[Drawn], task: str, path: Path) -> Path:
    """One test ROC curve per setup (first seed, full training data) with its AUC in the legend."""
    colours = setup_colours([d.setup for d in chosen])
    fig = new_figure(5.6, 5)
    ax = fig.subplots()
    for d in chosen:
        fpr, tpr = roc_points(d.y, d.prob)
        ax.plot(fpr, tpr, color=colours[d.setup], linewidth=1.6, label=f"{d.setup} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    classes = chosen[0].classes
    kind = f"positive class: {classes[-1]}" if len(classes) == 2 else "micro-average one-vs-rest"
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", aspect="equal")
    ax.set_title(f"{task}: test ROC\n({kind}, {_which(chosen)})")
    ax.legend(loc="lower right", frameon=True)
    return save(fig, path)


def confusion_grid(chosen: list[Drawn], task: str, path: Path) -> Path:
    """The test confusion matrix of each setup (argmax counts, shaded by row share), in a grid."""
    cols = len(chosen) if len(chosen) <= 3 else math.ceil(math.sqrt(len(chosen)))  # 4 → 2×2, not 3 + 1
    rows = math.ceil(len(chosen) / cols)
    n_classes = max(len(d.classes) for d in chosen)
    cell = max(2.6, 0.55 * n_classes + 1.4)
    fig = new_figure(max(cell * cols + 0.8, 5.2), cell * rows + 0.9)  # wide enough for the title over one panel
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
        ax.set(xlabel="predicted", ylabel="true", title=d.setup)
        ax.grid(False)
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[:len(chosen)]), shrink=0.8, label="share of the true class")
    fig.suptitle(f"{task}: test confusion matrices ({_which(chosen)})")
    return save(fig, path)


def reliability_diagram(chosen: list[Drawn], task: str, path: Path) -> Path:
    """Accuracy against top-label confidence per setup (ECE in the legend), with the confidence histogram below."""
    colours = setup_colours([d.setup for d in chosen])
    fig = new_figure(6, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for d in chosen:
        curve = reliability_curve(d.y, d.prob, RELIABILITY_BINS)
        filled = curve["count"] > 0
        ece = expected_calibration_error(d.y, d.prob)  # plug-in, as the curve drawn; the tables give the debiased one
        colour = colours[d.setup]
        top.plot(curve["confidence"][filled], curve["accuracy"][filled], marker="o", color=colour,
                 label=f"{d.setup} (plug-in ECE {ece:.3f})")
        bottom.stairs(curve["count"], curve["edges"], color=colour, linewidth=1.4)
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
    # The top-label confidence is never below 1/K, so the axis starts there.
    floor = 1 / max(len(d.classes) for d in chosen)
    top.set(xlim=(floor - 0.02, 1.01), ylim=(0, 1.02), ylabel="accuracy in bin")
    top.set_title(f"{task}: reliability on test\n({RELIABILITY_BINS}-bin curve, 15-bin ECE, {_which(chosen)})")
    top.legend(loc="upper left", frameon=True)
    bottom.set(xlabel="top-label confidence", ylabel="samples")
    return save(fig, path)
