"""Decision rules: Youden's threshold fixed on val, the argmax and threshold rules, and per-sample cuts."""

from __future__ import annotations

import numpy as np
import pytest
from evaluation.test_metrics import random_split
from sklearn.metrics import roc_curve

from medtransfer.evaluation.metrics import class_counts, compute_metrics, predicted_labels, youden_threshold
from medtransfer.evaluation.resampled import metrics_for_counts


def brute_force_youden(y: np.ndarray, p1: np.ndarray) -> tuple[float, list[float]]:
    """Best J over every distinct score as threshold (rule p >= t), and every threshold reaching it."""
    j = {}
    for t in np.unique(p1):
        pred = p1 >= t
        j[float(t)] = pred[y == 1].mean() - pred[y == 0].mean()
    best = max(j.values())
    return best, [t for t, v in j.items() if v >= best - 1e-12]


@pytest.mark.parametrize("seed", range(5))
def test_youden_threshold_maximises_j(seed: int) -> None:
    rng = np.random.default_rng(30 + seed)
    y, prob = random_split(rng, 120, 2, signal=1.0)
    if seed % 2:
        prob = np.round(prob, 1)  # ties among scores, and among values of J
    t = youden_threshold(y, prob)
    best, maximisers = brute_force_youden(y, prob[:, 1])
    got = compute_metrics(y, prob, threshold=t)
    np.testing.assert_allclose(got["sensitivity"] + got["specificity"] - 1, best, atol=1e-12)
    assert t == pytest.approx(max(maximisers))  # documented tie rule: the highest threshold
    fpr, tpr, _ = roc_curve(y, prob[:, 1])
    np.testing.assert_allclose(best, (tpr - fpr).max(), atol=1e-12)


def test_youden_threshold_tie_rule_by_hand() -> None:
    # thresholds 0.8: TPR 1/2 FPR 0 (J 1/2); 0.6: TPR 1/2 FPR 1/2 (0); 0.4: TPR 1 FPR 1/2 (J 1/2); 0.2: J 0
    y = np.array([1, 0, 1, 0])
    p1 = np.array([0.8, 0.6, 0.4, 0.2])
    assert youden_threshold(y, np.c_[1 - p1, p1]) == 0.8


def test_youden_threshold_needs_both_classes_and_two_columns() -> None:
    with pytest.raises(ValueError):
        youden_threshold(np.zeros(5, dtype=int), np.tile([0.6, 0.4], (5, 1)))
    with pytest.raises(ValueError):
        youden_threshold(np.array([0, 1, 2]), np.full((3, 3), 1 / 3))


def test_predicted_labels_rule() -> None:
    prob = np.array([[0.5, 0.5], [0.7, 0.3], [0.3, 0.7]])
    np.testing.assert_array_equal(predicted_labels(prob), [0, 0, 1])  # argmax: a tie goes to class 0
    np.testing.assert_array_equal(predicted_labels(prob, 0.5), [1, 0, 1])  # p >= t: the tie is positive
    np.testing.assert_array_equal(predicted_labels(prob, 0.3), [1, 1, 1])


def test_class_counts() -> None:
    assert class_counts(np.array([2, 0, 2, 2]), 4) == [1, 0, 3, 0]
    assert class_counts(np.array([], dtype=int), 2) == [0, 0]


def test_a_threshold_per_sample_is_each_samples_own_cut() -> None:
    """Pooled cross-validation keeps each fold's val threshold: a per-sample array of thresholds."""
    y = np.array([0, 1, 0, 1, 0, 1])
    p1 = np.array([0.35, 0.45, 0.55, 0.65, 0.2, 0.3])
    cut = np.array([0.4, 0.4, 0.6, 0.6, 0.25, 0.25])  # three folds of two samples
    got = compute_metrics(y, np.c_[1 - p1, p1], threshold=cut)
    # positives called: 0.45 >= 0.4, 0.65 >= 0.6, 0.3 >= 0.25; no negative reaches its own cut
    assert got["sensitivity"] == 1.0 and got["specificity"] == 1.0
    counts = np.ones((1, 6))
    assert metrics_for_counts(y, np.c_[1 - p1, p1], counts, threshold=cut)["sensitivity"][0] == 1.0
