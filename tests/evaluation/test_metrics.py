"""compute_metrics against direct scikit-learn calls and hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    cohen_kappa_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from medtransfer.evaluation.calibration import calibration_fit_for_counts, debiased_ece
from medtransfer.evaluation.metric_registry import METRICS
from medtransfer.evaluation.metrics import auroc, compute_metrics, confusion

BINARY_ONLY = {"auprc", "sensitivity", "specificity", "ppv", "npv", "calibration_slope", "calibration_intercept"}


def expected_names(k: int, ordinal: bool = False) -> set[str]:
    """The keys compute_metrics must return: METRICS that apply, plus one recall per class."""
    names = set(METRICS) - (set() if k == 2 else BINARY_ONLY) - (set() if ordinal else {"kappa_quadratic"})
    return names | {f"recall_c{c}" for c in range(k)}


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


def sklearn_reference(y: np.ndarray, prob: np.ndarray, threshold: float | None = None,
                      ordinal: bool = False) -> dict[str, float]:
    k = prob.shape[1]
    labels = np.arange(k)
    pred = prob.argmax(axis=1)  # the label metrics; the operating point alone uses the threshold
    at_threshold = pred if threshold is None else (prob[:, 1] >= threshold).astype(int)
    if k == 2:
        roc = roc_auc_score(y, prob[:, 1])
    else:
        roc = roc_auc_score(y, prob, multi_class="ovr", average="macro", labels=labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {
            "accuracy": accuracy_score(y, pred),
            "balanced_accuracy": balanced_accuracy_score(y, pred),
            "auroc": roc,
            "precision_weighted": precision_score(y, pred, labels=labels, average="weighted", zero_division=0),
            "recall_weighted": recall_score(y, pred, labels=labels, average="weighted", zero_division=0),
            "f1_weighted": f1_score(y, pred, labels=labels, average="weighted", zero_division=0),
            "f1_macro": f1_score(y, pred, labels=labels, average="macro", zero_division=0),
            "kappa": cohen_kappa_score(y, pred, labels=labels),
            "brier": brier_score_loss(y, prob[:, 1] if k == 2 else prob, labels=labels if k > 2 else None),
            # sklearn has neither: test_calibration.py checks them against a per-bin loop and a reference fit
            "ece": debiased_ece(y, prob),
            **{f"recall_c{c}": r for c, r in enumerate(recall_score(y, pred, labels=labels, average=None))},
        }
        if ordinal:
            out["kappa_quadratic"] = cohen_kappa_score(y, pred, labels=labels, weights="quadratic")
        if k == 2:
            out |= {
                "auprc": average_precision_score(y, prob[:, 1]),
                "sensitivity": recall_score(y, at_threshold, pos_label=1),
                "specificity": recall_score(y, at_threshold, pos_label=0),
                "ppv": precision_score(y, at_threshold, pos_label=1),
                "npv": precision_score(y, at_threshold, pos_label=0),
                **{name: v[0] for name, v in calibration_fit_for_counts(y, prob[:, 1], np.ones((1, len(y)))).items()},
            }
    return out


def assert_equal_to_reference(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    for name in want:
        assert isinstance(got[name], float), name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
def test_equals_sklearn_on_random_data(k: int, seed: int) -> None:
    rng = np.random.default_rng([k, seed])
    y, prob = random_split(rng, int(rng.integers(40, 200)), k)
    for ordinal in (False, True):
        got = compute_metrics(y, prob, ordinal=ordinal)
        assert set(got) == expected_names(k, ordinal)
        assert_equal_to_reference(got, sklearn_reference(y, prob, ordinal=ordinal))


@pytest.mark.parametrize("seed", range(4))
def test_binary_with_a_threshold_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng([2, seed, 1])
    y, prob = random_split(rng, int(rng.integers(40, 200)), 2)
    threshold = float(rng.uniform(0.2, 0.8))
    got = compute_metrics(y, prob, threshold=threshold)
    assert_equal_to_reference(got, sklearn_reference(y, prob, threshold))
    base = compute_metrics(y, prob)
    assert got["sensitivity"] != base["sensitivity"]  # the threshold did move the operating point
    assert got["accuracy"] == base["accuracy"]  # and nothing else


@pytest.mark.parametrize("k", [3, 5])
def test_equals_sklearn_with_a_never_predicted_class(k: int) -> None:
    """A class no row predicts: precision is 0/0 for it, sklearn's zero_division=0 convention applies."""
    rng = np.random.default_rng(k)
    y, prob = random_split(rng, 150, k)
    prob[:, 1] *= 1e-3  # class 1 is present in y but never the argmax
    prob /= prob.sum(axis=1, keepdims=True)
    assert 1 not in prob.argmax(axis=1)
    assert_equal_to_reference(compute_metrics(y, prob, ordinal=True), sklearn_reference(y, prob, ordinal=True))


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
    # Cohen's kappa: po = 2/3, pe = 1/2 -> (2/3 - 1/2) / (1/2) = 1/3
    assert got["kappa"] == pytest.approx(1 / 3)
    assert "kappa_quadratic" not in got
    assert confusion(y, prob) == [[2, 1], [1, 2]]
    # squared errors of p1 against y: .01 + .36 + .16 + .04 + .49 + .01 = 1.07
    assert got["brier"] == pytest.approx(1.07 / 6)
    # ranked by p1: 0.9+ 0.8+ 0.6- 0.4- 0.3+ 0.1-: precision at each positive 1, 1, 3/5
    assert got["auprc"] == pytest.approx((1 + 1 + 0.6) / 3)
    assert got["sensitivity"] == got["ppv"] == got["recall_c1"] == pytest.approx(2 / 3)


def test_hand_computed_binary_operating_point() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.8, 0.3, 0.9])
    prob = np.c_[1 - p1, p1]
    # p >= 0.4: pred = [0, 1, 1, 1, 0, 1] -> TP 2, FN 1, FP 2, TN 1 (0.4 itself is called positive)
    got = compute_metrics(y, prob, threshold=0.4)
    assert got["sensitivity"] == pytest.approx(2 / 3)
    assert got["specificity"] == pytest.approx(1 / 3)
    assert got["ppv"] == pytest.approx(2 / 4)
    assert got["npv"] == pytest.approx(1 / 2)
    # argmax (p >= 0.5 here): pred = [0, 1, 0, 1, 0, 1] -> the label metrics and the confusion matrix
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert (got["recall_c0"], got["recall_c1"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert confusion(y, prob) == [[2, 1], [1, 2]]
    # the probability metrics do not depend on the threshold
    base = compute_metrics(y, prob)
    for name in ("auroc", "auprc", "brier", "ece", "calibration_slope", "calibration_intercept"):
        assert got[name] == base[name], name


def test_undefined_operating_point_ratios_are_nan() -> None:
    """No predicted positives: PPV is 0/0 (NaN), NPV and the rest are defined."""
    y = np.array([0, 1, 0, 1])
    p1 = np.array([0.1, 0.2, 0.3, 0.4])
    got = compute_metrics(y, np.c_[1 - p1, p1], threshold=0.9)
    assert math.isnan(got["ppv"])
    assert got["sensitivity"] == 0.0 and got["specificity"] == 1.0 and got["npv"] == 0.5


def test_hand_computed_quadratic_kappa_three_classes() -> None:
    # true 0 predicted 2 costs 4x as much as true 0 predicted 1
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    prob = np.eye(3)[pred] * 0.7 + 0.1
    # observed weighted disagreement: (0,1) costs 1, (2,0) costs 4 -> 5 / 6
    # expected: true marginals (2,2,2), predicted (2,3,1), N = 6:
    #   sum_j p_j sum_i t_i (i-j)^2 / N^2 = (2*10 + 3*4 + 1*10) / 36 = 42 / 36
    # kappa = 1 - (5/6) / (42/36) = 1 - 5/7 = 2/7
    got = compute_metrics(y, prob, ordinal=True)
    assert got["kappa_quadratic"] == pytest.approx(2 / 7)
    # unweighted: po = 4/6, pe = (2*2 + 2*3 + 2*1) / 36 = 1/3 -> (2/3 - 1/3) / (2/3) = 1/2
    assert got["kappa"] == pytest.approx(1 / 2)
    assert "kappa_quadratic" not in compute_metrics(y, prob)


@pytest.mark.parametrize("seed", range(3))
def test_kappa_invariant_to_renaming_classes(seed: int) -> None:
    """A nominal task's classes have no order: permuting the indices must leave kappa (and accuracy) unchanged."""
    rng = np.random.default_rng(20 + seed)
    k = 4
    y, prob = random_split(rng, 200, k, signal=1.0)
    perm = rng.permutation(k)
    while (perm == np.arange(k)).all() or (perm == np.arange(k)[::-1]).all():
        perm = rng.permutation(k)  # not the identity, and not the reversal (which keeps squared distances)
    renamed_prob = np.empty_like(prob)
    renamed_prob[:, perm] = prob  # old class j is new class perm[j]
    a = compute_metrics(y, prob, ordinal=True)
    b = compute_metrics(perm[y], renamed_prob, ordinal=True)
    np.testing.assert_allclose(b["kappa"], a["kappa"], rtol=1e-12)
    np.testing.assert_allclose(b["accuracy"], a["accuracy"], rtol=1e-12)
    # the quadratic weights do depend on the order, so this check could see a change
    assert abs(b["kappa_quadratic"] - a["kappa_quadratic"]) > 1e-3


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
    got = compute_metrics(y, prob, ordinal=True)
    for name in set(got) - {"ece", "brier", "calibration_slope", "calibration_intercept"}:
        assert got[name] == pytest.approx(1.0), name
    # always right at 90% confidence: under-confident by 0.1 in one bin whose gaps all equal 0.1 (no noise)
    assert got["ece"] == pytest.approx(0.1)
    assert got["brier"] == pytest.approx(0.01 if k == 2 else 0.01 + (k - 1) * (0.1 / (k - 1)) ** 2)
    if k == 2:
        assert math.isnan(got["calibration_slope"])  # separated classes: no maximum-likelihood fit
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
    got = compute_metrics(y, prob, ordinal=True)
    assert math.isnan(got["kappa"]) and math.isnan(got["kappa_quadratic"])
    assert got["accuracy"] == 1.0
    assert math.isnan(got["recall_c1"]) and got["recall_c0"] == 1.0  # class 1 absent: its recall is 0/0


def test_confusion_counts_rows_true_columns_predicted() -> None:
    rng = np.random.default_rng(3)
    y, prob = random_split(rng, 80, 4, signal=0.5)
    pred = prob.argmax(axis=1)
    want = [[int(np.sum((y == i) & (pred == j))) for j in range(4)] for i in range(4)]
    assert confusion(y, prob) == want


@pytest.mark.parametrize("k", [3, 5])
def test_binary_only_metrics_absent_for_more_classes(k: int) -> None:
    y, prob = random_split(np.random.default_rng(k), 100, k)
    got = compute_metrics(y, prob)
    assert not BINARY_ONLY & set(got)
    assert set(got) == expected_names(k)
    scalar = [m for m in got if not m.startswith("recall_c")]
    assert scalar == [m for m in METRICS if m in got]  # display order kept, per-class recalls after
    with pytest.raises(ValueError):
        compute_metrics(y, prob, threshold=0.5)
