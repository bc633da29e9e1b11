"""The same metrics for many bootstrap resamples at once, each resample given as per-sample counts.

sklearn costs ~10 ms a call, so 2,000 resamples of 8 metrics took minutes per split. A resample is just a
count per sample (how often it was drawn), so confusion matrices and AUROC of every resample are a few
matrix products. The point estimates still come from sklearn (metrics.py); tests check that these
vectorised versions equal sklearn on materialised resamples.
"""

from __future__ import annotations

import numpy as np

from medtransfer.evaluation.calibration import ece_for_counts

CHUNK = 256  # resamples per block: bounds memory at CHUNK x n floats


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def confusion_counts(y: np.ndarray, pred: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """(B, K, K) confusion matrices, rows true, columns predicted."""
    cell = np.zeros((len(y), k * k))
    cell[np.arange(len(y)), y * k + pred] = 1.0
    return (counts @ cell).reshape(-1, k, k)


def from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, weighted/macro P/R/F1 and quadratic kappa, mirroring sklearn's conventions."""
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
    penalty = (idx[:, None] - idx[None, :]) ** 2 / max((k - 1) ** 2, 1)
    expected = support[:, :, None] * predicted[:, None, :] / np.maximum(total, 1)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = 1 - (penalty * cm).sum(axis=(1, 2)) / (penalty * expected).sum(axis=(1, 2))
    return {
        "accuracy": _safe_div(diag.sum(axis=1), total),
        "balanced_accuracy": balanced,
        "precision_weighted": (precision * weights).sum(axis=1),
        "recall_weighted": (recall * weights).sum(axis=1),
        "f1_weighted": (f1 * weights).sum(axis=1),
        "f1_macro": f1.mean(axis=1),
        "kappa": kappa,
    }


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


def metrics_for_counts(y: np.ndarray, prob: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each resample (row of counts), in blocks of CHUNK rows."""
    pred = prob.argmax(axis=1)
    blocks = []
    for start in range(0, len(counts), CHUNK):
        c = counts[start:start + CHUNK].astype(float)
        out = from_confusion(confusion_counts(y, pred, c, prob.shape[1]))
        out["auroc"] = auroc_counts(y, prob, c)
        out["ece"] = ece_for_counts(y, prob, c)
        blocks.append(out)
    return {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}
