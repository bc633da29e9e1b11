"""The val selection metric for many candidate models at once (heads of a sweep, k of a kNN), without sklearn."""

from __future__ import annotations

import numpy as np

from medtransfer.evaluation.weighted import auroc_counts


def auroc_many(y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """`metrics.auroc` for each candidate: y (n,), prob (M, n, K) → (M,); binary, or one-vs-rest macro over present classes."""
    once = np.ones((1, prob.shape[1]))  # each sample counted once: the bootstrap's weighted AUROC on the split itself
    # sklearn refuses NaN scores; a diverged candidate gets nan here, which selection treats as worst.
    return np.array([np.nan if np.isnan(p).any() else auroc_counts(np.asarray(y), p, once)[0] for p in prob])


def accuracy_many(y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Accuracy of the argmax (first maximum on ties, as numpy) for each candidate: prob (M, n, K) → (M,)."""
    return (prob.argmax(2) == np.asarray(y)[None, :]).mean(1)


def selection_values(select: str, y: np.ndarray, prob: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """What history records as `val_metric` for each candidate: the AUROC, the accuracy, or minus the val loss."""
    if select == "val_auroc":
        return auroc_many(y, prob)
    if select == "val_accuracy":
        return accuracy_many(y, prob)
    if select == "val_loss":
        return -np.asarray(loss, dtype=float)
    raise ValueError(f"select must be val_auroc, val_accuracy or val_loss, not {select!r}")


def as_scores(values: np.ndarray) -> np.ndarray:
    """Higher is better, and an undefined value (nan) loses to any defined one, as in `BestEpoch.score`."""
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values), values, -np.inf)
