"""compute_metrics against direct scikit-learn calls and hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from medtransfer.evaluation.calibration import expected_calibration_error
from medtransfer.evaluation.metrics import METRICS, auroc, compute_metrics, confusion


def random_split(rng: np.random.Generator, n: int, k: int, signal: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Labels covering all k classes and informative-but-imperfect probabilities (rows sum to 1)."""
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)  # every class present
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    prob = np.exp(logits)
    return y, prob / prob.sum(axis=1, keepdims=True)


def mann_whitney(positive: np.ndarray, score: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie), by brute force over all pairs."""
    pos, neg = score[positive], score[~positive]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def sklearn_reference(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    k = prob.shape[1]
    labels = np.arange(k)
    pred = prob.argmax(axis=1)
    if k == 2:
        roc = roc_auc_score(y, prob[:, 1])
    else:
        roc = roc_auc_score(y, prob, multi_class="ovr", average="macro", labels=labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "accuracy": accuracy_score(y, pred),
            "balanced_accuracy": balanced_accuracy_score(y, pred),
            "auroc": roc,
            "precision_weighted": precision_score(y, pred, labels=labels, average="weighted", zero_division=0),
            "recall_weighted": recall_score(y, pred, labels=labels, average="weighted", zero_division=0),
            "f1_weighted": f1_score(y, pred, labels=labels, average="weighted", zero_division=0),
            "f1_macro": f1_score(y, pred, labels=labels, average="macro", zero_division=0),
            "kappa": cohen_kappa_score(y, pred, labels=labels, weights="quadratic"),
            # sklearn has no ECE; test_calibration.py checks it against an independent per-bin loop
            "ece": expected_calibration_error(y, prob),
        }


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
def test_equals_sklearn_on_random_data(k: int, seed: int) -> None:
    rng = np.random.default_rng([k, seed])
    y, prob = random_split(rng, int(rng.integers(40, 200)), k)
    got = compute_metrics(y, prob)
    want = sklearn_reference(y, prob)
    assert set(got) == set(METRICS)
    for name in METRICS:
        assert isinstance(got[name], float), name
        assert got[name] == pytest.approx(want[name], rel=1e-12, abs=1e-12), name


@pytest.mark.parametrize("k", [3, 5])
def test_equals_sklearn_with_a_never_predicted_class(k: int) -> None:
    """A class no row predicts: precision is 0/0 for it, sklearn's zero_division=0 convention applies."""
    rng = np.random.default_rng(k)
    y, prob = random_split(rng, 150, k)
    prob[:, 1] *= 1e-3  # class 1 is present in y but never the argmax
    prob /= prob.sum(axis=1, keepdims=True)
    assert 1 not in prob.argmax(axis=1)
    got, want = compute_metrics(y, prob), sklearn_reference(y, prob)
    for name in METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-12, abs=1e-12), name


def test_hand_computed_binary_example() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.8, 0.3, 0.9])
    prob = np.c_[1 - p1, p1]
    # pred = [0, 1, 0, 1, 0, 1]; confusion [[2, 1], [1, 2]]
    # AUROC: pairs (pos, neg) 9, pos scores {0.8, 0.3, 0.9} beat negatives {0.1, 0.6, 0.4}: 3 + 1 + 3 = 7
    got = compute_metrics(y, prob)
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["balanced_accuracy"] == pytest.approx(2 / 3)
    assert got["auroc"] == pytest.approx(7 / 9)
    assert got["precision_weighted"] == pytest.approx(2 / 3)
    assert got["recall_weighted"] == pytest.approx(2 / 3)
    assert got["f1_weighted"] == pytest.approx(2 / 3)
    assert got["f1_macro"] == pytest.approx(2 / 3)
    # quadratic kappa with 2 classes = Cohen's kappa: po = 2/3, pe = 1/2 -> (2/3 - 1/2) / (1/2) = 1/3
    assert got["kappa"] == pytest.approx(1 / 3)
    assert confusion(y, prob) == [[2, 1], [1, 2]]


def test_hand_computed_quadratic_kappa_three_classes() -> None:
    # true 0 predicted 2 costs 4x as much as true 0 predicted 1
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    prob = np.eye(3)[pred] * 0.7 + 0.1
    # observed weighted disagreement: (0,1) costs 1, (2,0) costs 4 -> 5 / 6
    # expected: true marginals (2,2,2), predicted (2,3,1), N = 6:
    #   sum_j p_j sum_i t_i (i-j)^2 / N^2 = (2*10 + 3*4 + 1*10) / 36 = 42 / 36
    # kappa = 1 - (5/6) / (42/36) = 1 - 5/7 = 2/7
    assert compute_metrics(y, prob)["kappa"] == pytest.approx(2 / 7)


@pytest.mark.parametrize("k", [3, 5])
def test_multiclass_auroc_with_an_absent_class_is_mean_over_present(k: int) -> None:
    rng = np.random.default_rng(10 + k)
    y, prob = random_split(rng, 120, k)
    absent = 1
    y[y == absent] = 0  # class `absent` no longer occurs in y, but still has a probability column
    present = [c for c in range(k) if c != absent]
    want = np.mean([mann_whitney(y == c, prob[:, c]) for c in present])
    assert auroc(y, prob) == pytest.approx(want, rel=1e-12)
    assert compute_metrics(y, prob)["auroc"] == pytest.approx(want, rel=1e-12)
    # and it is not the mean over all classes with the absent one counted somehow
    assert not math.isnan(compute_metrics(y, prob)["auroc"])


@pytest.mark.parametrize("k", [2, 3, 5])
def test_perfect_classifier_scores_one_everywhere(k: int) -> None:
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 60)
    y[:k] = np.arange(k)
    prob = np.full((60, k), 0.1 / (k - 1))
    prob[np.arange(60), y] = 0.9
    got = compute_metrics(y, prob)
    for name in METRICS:
        if name != "ece":
            assert got[name] == pytest.approx(1.0), name
    assert got["ece"] == pytest.approx(0.1)  # always right at 90% confidence: under-confident by 0.1
    assert np.array_equal(np.diag(confusion(y, prob)), np.bincount(y, minlength=k))


@pytest.mark.parametrize("k", [2, 3])
def test_auroc_nan_with_a_single_class(k: int) -> None:
    rng = np.random.default_rng(0)
    y = np.zeros(20, dtype=int)
    prob = rng.dirichlet(np.ones(k), 20)
    got = compute_metrics(y, prob)
    assert math.isnan(got["auroc"])
    assert got["accuracy"] == pytest.approx(np.mean(prob.argmax(axis=1) == 0))


def test_kappa_nan_when_undefined() -> None:
    """All true labels and all predictions the same class: kappa is 0/0, reported as NaN, not an error."""
    y = np.zeros(10, dtype=int)
    prob = np.tile([0.9, 0.05, 0.05], (10, 1))
    got = compute_metrics(y, prob)
    assert math.isnan(got["kappa"])
    assert got["accuracy"] == 1.0


def test_confusion_counts_rows_true_columns_predicted() -> None:
    rng = np.random.default_rng(3)
    y, prob = random_split(rng, 80, 4, signal=0.5)
    pred = prob.argmax(axis=1)
    want = [[int(np.sum((y == i) & (pred == j))) for j in range(4)] for i in range(4)]
    assert confusion(y, prob) == want
