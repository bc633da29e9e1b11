"""Top-label calibration: expected calibration error (ECE) and reliability curves, per split or per resample.

Bins are equal-width on the top-label confidence (the largest probability of a row) and closed on the right:
with edges = np.linspace(0, 1, bins + 1), bin i holds edges[i] < conf <= edges[i + 1]; a confidence of exactly 0
(only a degenerate all-zero row) goes to the first bin. Every function here bins through `_bin_index`, so a
confidence lying exactly on an edge lands in the same bin for a whole split and for each resample.
"""

from __future__ import annotations

import numpy as np


def _edges(bins: int) -> np.ndarray:
    if not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    return np.linspace(0.0, 1.0, bins + 1)


def _top_label(y: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence (max probability) and correctness of the argmax (as 0/1 floats), per sample."""
    y, prob = np.asarray(y), np.asarray(prob, dtype=float)
    if prob.ndim != 2 or y.shape != (len(prob),):
        raise ValueError(f"need prob (n, K) and y (n,), got prob {prob.shape} and y {y.shape}")
    if not np.all((prob >= 0) & (prob <= 1)):
        raise ValueError("probabilities must lie in [0, 1] (and not be NaN)")
    # argmax takes the first of tied classes, as metrics.py does for the predicted label
    return prob.max(axis=1), (prob.argmax(axis=1) == y).astype(float)


def _bin_index(conf: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # side="left" sends a confidence equal to an edge into the bin that edge closes: (lo, hi]
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, len(edges) - 2)


def reliability_curve(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin mean confidence, accuracy (NaN in empty bins) and count, plus the bin edges, for a reliability diagram."""
    edges = _edges(bins)
    conf, correct = _top_label(y, prob)
    idx = _bin_index(conf, edges)
    count = np.bincount(idx, minlength=bins)
    filled = count > 0

    def mean(values: np.ndarray) -> np.ndarray:
        total = np.bincount(idx, weights=values, minlength=bins)
        return np.divide(total, count, out=np.full(bins, np.nan), where=filled)

    return {"edges": edges, "confidence": mean(conf), "accuracy": mean(correct), "count": count}


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: sum over bins of |accuracy - mean confidence| * n_bin / n (NaN for an empty split)."""
    curve = reliability_curve(y, prob, bins)
    n = curve["count"].sum()
    if n == 0:
        return float("nan")
    filled = curve["count"] > 0
    gap = np.abs(curve["accuracy"][filled] - curve["confidence"][filled])
    return float((gap * curve["count"][filled]).sum() / n)


def ece_for_counts(y: np.ndarray, prob: np.ndarray, counts: np.ndarray, bins: int = 15) -> np.ndarray:
    """Top-label ECE for each resample (row of per-sample draw counts, shape (B, n)); NaN for an empty row."""
    edges = _edges(bins)
    conf, correct = _top_label(y, prob)
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[1] != len(conf):
        raise ValueError(f"counts must be (B, {len(conf)}), got {counts.shape}")
    if np.any(counts < 0):
        raise ValueError("counts must be non-negative")
    # |acc - conf| * n_bin / N = |sum of (correct - conf) over the bin| / N, so one (B, n) @ (n, bins) product
    # gives every bin of every resample; resamples never re-bin, since a sample's bin does not depend on the draw.
    gap = np.zeros((len(conf), bins))
    gap[np.arange(len(conf)), _bin_index(conf, edges)] = correct - conf
    total = counts.sum(axis=1)
    per_bin = np.abs(counts @ gap).sum(axis=1)
    return np.divide(per_bin, total, out=np.full(len(counts), np.nan), where=total > 0)
