"""The metrics named in DESIGN.md, computed by scikit-learn on a whole split at once."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from medtransfer.evaluation.calibration import expected_calibration_error

METRICS = ("accuracy", "balanced_accuracy", "auroc", "precision_weighted", "recall_weighted",
           "f1_weighted", "f1_macro", "kappa", "ece")


def auroc(y: np.ndarray, prob: np.ndarray) -> float:
    """Binary AUROC, or one-vs-rest macro AUROC over the classes present (with both positives and negatives)."""
    n_classes = prob.shape[1]
    if n_classes == 2:
        return float(roc_auc_score(y, prob[:, 1])) if len(np.unique(y)) == 2 else float("nan")
    scores = [roc_auc_score(y == k, prob[:, k]) for k in range(n_classes) if 0 < (y == k).sum() < len(y)]
    return float(np.mean(scores)) if scores else float("nan")


def compute_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """All metrics for true labels `y` (ints) and class probabilities `prob` (n, K)."""
    labels = np.arange(prob.shape[1])
    pred = prob.argmax(axis=1)
    with warnings.catch_warnings():
        # Absent classes make some precisions 0/0; sklearn's zero_division handles it, the warning is noise.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)
        pw, rw, fw, _ = precision_recall_fscore_support(y, pred, labels=labels, average="weighted", zero_division=0)
        f_macro = precision_recall_fscore_support(y, pred, labels=labels, average="macro", zero_division=0)[2]
        kappa = cohen_kappa_score(y, pred, labels=labels, weights="quadratic")
        balanced = balanced_accuracy_score(y, pred)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced),
        "auroc": auroc(y, prob),
        "precision_weighted": float(pw),
        "recall_weighted": float(rw),
        "f1_weighted": float(fw),
        "f1_macro": float(f_macro),
        "kappa": float(kappa) if np.isfinite(kappa) else float("nan"),
        "ece": expected_calibration_error(y, prob),  # top-label, 15 bins: clinicians read the probabilities
    }


def confusion(y: np.ndarray, prob: np.ndarray) -> list[list[int]]:
    """Confusion matrix (rows true, columns predicted) over all classes."""
    return confusion_matrix(y, prob.argmax(axis=1), labels=np.arange(prob.shape[1])).tolist()
