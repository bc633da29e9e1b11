"""The same metrics for many bootstrap resamples at once, each resample given as per-sample counts.

sklearn costs ~10 ms a call, so 2,000 resamples of 8 metrics took minutes per split. A resample is just a
count per sample (how often it was drawn), so confusion matrices and AUROC of every resample are a few
matrix products. The point estimates come from metrics.py (sklearn where it has the metric); tests check that
these vectorised versions equal it on materialised resamples.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from medtransfer.evaluation.calibration import calibration_fit_for_counts, debiased_ece_for_counts
from medtransfer.evaluation.metrics import brier_losses, predicted_labels

CHUNK = 256  # resamples per block: bounds memory at CHUNK x n floats


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def confusion_counts(y: np.ndarray, pred: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """(B, K, K) confusion matrices, rows true, columns predicted."""
    cell = np.zeros((len(y), k * k))
    cell[np.arange(len(y)), y * k + pred] = 1.0
    return (counts @ cell).reshape(-1, k, k)


def _kappa(cm: np.ndarray, penalty: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Weighted kappa 1 - sum(penalty * observed) / sum(penalty * expected), as sklearn's cohen_kappa_score."""
    expected = support[:, :, None] * predicted[:, None, :] / np.maximum(cm.sum(axis=(1, 2)), 1)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1 - (penalty * cm).sum(axis=(1, 2)) / (penalty * expected).sum(axis=(1, 2))


def from_confusion(cm: np.ndarray, ordinal: bool = False) -> dict[str, np.ndarray]:
    """Every label metric of (B, K, K) confusion matrices, mirroring sklearn's conventions (see metrics.py)."""
    k = cm.shape[1]
    total = cm.sum(axis=(1, 2))
    diag = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(axis=2), cm.sum(axis=1)
    recall, precision = _safe_div(diag, support), _safe_div(diag, predicted)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    weights = _safe_div(support, total[:, None])
    present = support > 0
    balanced = np.where(present.any(axis=1), (recall * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1), 0.0)
    idx = np.arange(k)
    out = {
        "accuracy": _safe_div(diag.sum(axis=1), total),
        "balanced_accuracy": balanced,
        "precision_weighted": (precision * weights).sum(axis=1),
        "recall_weighted": (recall * weights).sum(axis=1),
        "f1_weighted": (f1 * weights).sum(axis=1),
        "f1_macro": f1.mean(axis=1),
        "kappa": _kappa(cm, 1.0 - np.eye(k), support, predicted),
    }
    if ordinal:
        out["kappa_quadratic"] = _kappa(cm, (idx[:, None] - idx[None, :]) ** 2.0, support, predicted)
    out |= {f"recall_c{c}": _nan_div(diag[:, c], support[:, c]) for c in idx}
    return out


def operating_point(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV and NPV of (B, 2, 2) confusion matrices at a binary task's threshold."""
    tn, fp, fn, tp = cm[:, 0, 0], cm[:, 0, 1], cm[:, 1, 0], cm[:, 1, 1]
    return {"sensitivity": _nan_div(tp, tp + fn), "specificity": _nan_div(tn, tn + fp),
            "ppv": _nan_div(tp, tp + fp), "npv": _nan_div(tn, tn + fn)}


def _nan_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.shape(num), np.nan), where=den > 0)


def binary_auroc(positive: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Weighted Mann–Whitney AUROC for each row of counts; ties count one half; NaN without both classes."""
    order = np.argsort(score, kind="stable")
    s, pos = score[order], positive[order].astype(float)
    w = counts[:, order]
    first = np.r_[True, s[1:] != s[:-1]]  # start of each tie block in sorted order
    block = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(s)] - 1
    neg_w = w * (1 - pos)
    cum = np.cumsum(neg_w, axis=1)
    below = np.where(starts > 0, cum[:, np.maximum(starts - 1, 0)], 0.0)  # negatives strictly below each block
    equal = cum[:, ends] - below
    credit = below[:, block] + 0.5 * equal[:, block]
    pos_w = w * pos
    n_pos, n_neg = pos_w.sum(axis=1), neg_w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (pos_w * credit).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def auroc_counts(y: np.ndarray, prob: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Binary AUROC, or one-vs-rest macro over the classes present in each resample."""
    k = prob.shape[1]
    if k == 2:
        return binary_auroc(y == 1, prob[:, 1], counts)
    per_class = np.stack([binary_auroc(y == c, prob[:, c], counts) for c in range(k)], axis=1)
    finite = np.isfinite(per_class)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(finite, per_class, 0.0).sum(axis=1) / finite.sum(axis=1)


def average_precision_counts(positive: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Weighted average precision (sklearn's: sum over thresholds of recall gain x precision); NaN without positives."""
    order = np.argsort(-score, kind="stable")
    s, pos = score[order], positive[order].astype(float)
    w = counts[:, order]
    last = np.r_[s[1:] != s[:-1], True]  # end of each tie block: a threshold takes its whole block
    tp = np.cumsum(w * pos, axis=1)[:, last]
    called = np.cumsum(w, axis=1)[:, last]
    gain = np.diff(tp, axis=1, prepend=0.0)
    n_pos = tp[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_pos > 0, (gain * _safe_div(tp, called)).sum(axis=1) / n_pos, np.nan)


def metrics_for_counts(y: np.ndarray, prob: np.ndarray, counts: np.ndarray, *, threshold: float | None = None,
                       ordinal: bool = False, names: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """Every metric of compute_metrics (same keywords), or only `names`, for each resample (row of counts)."""
    y, prob = np.asarray(y), np.asarray(prob, dtype=float)
    k = prob.shape[1]

    def wanted(*metrics: str) -> bool:  # the costly ones (ECE, calibration fits) only when asked for
        return names is None or not set(metrics).isdisjoint(names)

    pred = predicted_labels(prob)
    at_threshold = predicted_labels(prob, threshold)  # a threshold on more than two classes is refused here
    loss = brier_losses(y, prob)
    blocks = []
    for start in range(0, len(counts), CHUNK):
        c = np.asarray(counts[start:start + CHUNK], dtype=float)
        out = from_confusion(confusion_counts(y, pred, c, k), ordinal)
        if wanted("auroc"):
            out["auroc"] = auroc_counts(y, prob, c)
        if wanted("brier"):
            with np.errstate(divide="ignore", invalid="ignore"):
                out["brier"] = (c @ loss) / c.sum(axis=1)
        if wanted("ece"):
            out["ece"] = debiased_ece_for_counts(y, prob, c)
        if k == 2:
            out |= operating_point(confusion_counts(y, at_threshold, c, k))
            if wanted("auprc"):
                out["auprc"] = average_precision_counts(y == 1, prob[:, 1], c)
            if wanted("calibration_slope", "calibration_intercept"):
                out |= calibration_fit_for_counts(y, prob[:, 1], c)
        blocks.append({name: v for name, v in out.items() if names is None or name in names})
    return {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}
