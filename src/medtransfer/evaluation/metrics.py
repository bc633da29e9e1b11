"""The metrics of a run (declared in metric_registry.py), computed on a whole split at once (scikit-learn where it has the metric).

Predicted labels are the argmax for every label metric (accuracy ... recall_c{k}, the confusion matrix), as
in the reference study and the paired tests. A binary task's operating point (sensitivity, specificity, PPV,
NPV) uses a threshold t fixed on val instead: class 1 when p_pos >= t. AUROC, AUPRC, Brier, ECE and the
calibration fit use the probabilities.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from medtransfer.evaluation.calibration import calibration_fit_for_counts, debiased_ece
from medtransfer.evaluation.metric_registry import METRICS


# The binary argmax rule as a threshold: p1 >= this is p1 > p0, a tie at 0.5 going to class 0 as argmax's does.
ARGMAX_THRESHOLD = float(np.nextafter(0.5, 1.0))


def predicted_labels(prob: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Argmax of each row, or with a threshold (binary only) 1 where prob[:, 1] >= threshold."""
    if threshold is None:
        return prob.argmax(axis=1)  # ties go to the lower class index
    if prob.shape[1] != 2:
        raise ValueError(f"a decision threshold needs a binary task, got {prob.shape[1]} classes")
    return (prob[:, 1] >= threshold).astype(int)


def youden_threshold(y: np.ndarray, prob: np.ndarray) -> float:
    """The threshold on prob[:, 1] maximising sensitivity + specificity - 1 on (y, prob); ties: the highest one.

    Candidates are the distinct scores (roc_curve, rule p >= t), so the result is one of the given
    probabilities; among equal J the highest threshold wins (fewest positives called).
    """
    y, prob = np.asarray(y), np.asarray(prob, dtype=float)
    if prob.ndim != 2 or prob.shape[1] != 2:
        raise ValueError(f"Youden's threshold needs binary probabilities (n, 2), got {prob.shape}")
    if len(np.unique(y == 1)) != 2:
        raise ValueError("Youden's threshold needs both classes in y")
    fpr, tpr, thresholds = roc_curve(y == 1, prob[:, 1], drop_intermediate=False)
    n_pos, n_neg = int((y == 1).sum()), int((y != 1).sum())
    # J * n_pos * n_neg = TP * n_neg - FP * n_pos is a whole number: ties are exact, not up to rounding
    scaled = np.rint(tpr * n_pos) * n_neg - np.rint(fpr * n_neg) * n_pos
    # the first point (threshold +inf) calls nothing positive; thresholds decrease, argmax takes the first maximum
    return float(thresholds[1:][np.argmax(scaled[1:])])


def class_counts(y: np.ndarray, n_classes: int) -> list[int]:
    """Number of samples of each class index 0..n_classes-1."""
    return np.bincount(np.asarray(y, dtype=int), minlength=n_classes)[:n_classes].tolist()


def auroc(y: np.ndarray, prob: np.ndarray) -> float:
    """Binary AUROC, or one-vs-rest macro AUROC over the classes present (with both positives and negatives)."""
    n_classes = prob.shape[1]
    if n_classes == 2:
        return float(roc_auc_score(y, prob[:, 1])) if len(np.unique(y)) == 2 else float("nan")
    scores = [roc_auc_score(y == k, prob[:, k]) for k in range(n_classes) if 0 < (y == k).sum() < len(y)]
    return float(np.mean(scores)) if scores else float("nan")


def brier_losses(y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Per-sample Brier loss: (p_pos - y)^2 for two classes, sum_k (p_k - [y = k])^2 for more (range 0-2)."""
    if prob.shape[1] == 2:
        return (prob[:, 1] - (y == 1)) ** 2
    return ((prob - (y[:, None] == np.arange(prob.shape[1]))) ** 2).sum(axis=1)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def compute_metrics(y: np.ndarray, prob: np.ndarray, *, threshold: float | None = None,
                    ordinal: bool = False) -> dict[str, float]:
    """All metrics for true labels `y` (ints) and class probabilities `prob` (n, K).

    threshold: binary tasks only, the cut on prob[:, 1] fixed on val (class 1 when p >= threshold) for the four
    operating-point metrics (sensitivity, specificity, PPV, NPV); None is the argmax, i.e. 0.5 with an exact tie
    going to class 0. Every other label metric uses the argmax, as the reference study and the paired tests do.
    ordinal: the class indices are ordered, and kappa_quadratic is added. ece is the debiased 15-bin top-label
    ECE (calibration.debiased_ece).
    """
    y, prob = np.asarray(y), np.asarray(prob, dtype=float)
    k = prob.shape[1]
    labels = np.arange(k)
    pred = predicted_labels(prob)
    at_threshold = predicted_labels(prob, threshold)  # a threshold on more than two classes is refused here
    cm = confusion_matrix(y, pred, labels=labels)
    with warnings.catch_warnings():
        # Absent classes make some precisions 0/0; sklearn's zero_division handles it, the warning is noise.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # kappa 0/0 when every label and prediction agree
        pw, rw, fw, _ = precision_recall_fscore_support(y, pred, labels=labels, average="weighted", zero_division=0)
        f_macro = precision_recall_fscore_support(y, pred, labels=labels, average="macro", zero_division=0)[2]
        kappa = {"kappa": cohen_kappa_score(y, pred, labels=labels)}
        if ordinal:
            kappa["kappa_quadratic"] = cohen_kappa_score(y, pred, labels=labels, weights="quadratic")
        balanced = balanced_accuracy_score(y, pred)
    out = {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced),
        "auroc": auroc(y, prob),
        "precision_weighted": float(pw),
        "recall_weighted": float(rw),
        "f1_weighted": float(fw),
        "f1_macro": float(f_macro),
        **{name: float(v) if np.isfinite(v) else float("nan") for name, v in kappa.items()},
        "brier": float(brier_losses(y, prob).mean()) if len(y) else float("nan"),
        "ece": debiased_ece(y, prob),  # clinicians read the probabilities; the plug-in ECE is biased upward
    }
    if k == 2:
        (tn, fp), (fn, tp) = confusion_matrix(y, at_threshold, labels=labels)
        out |= {
            "auprc": float(average_precision_score(y == 1, prob[:, 1])) if (y == 1).any() else float("nan"),
            "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
        }
        fit = calibration_fit_for_counts(y, prob[:, 1], np.ones((1, len(y))))
        out |= {name: float(v[0]) for name, v in fit.items()}
    ordered = {name: out[name] for name in METRICS if name in out}
    return ordered | {f"recall_c{c}": _ratio(cm[c, c], cm[c].sum()) for c in labels}


def confusion(y: np.ndarray, prob: np.ndarray) -> list[list[int]]:
    """Confusion matrix (rows true, columns predicted by argmax) over all classes, as the label metrics count."""
    return confusion_matrix(y, predicted_labels(np.asarray(prob)), labels=np.arange(prob.shape[1])).tolist()
