"""Vectorised per-resample metrics against sklearn on materialised resamples."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from medtransfer.evaluation.metrics import compute_metrics
from medtransfer.evaluation.resampled import (
    CHUNK,
    average_precision_counts,
    binary_auroc,
    confusion_counts,
    metrics_for_counts,
)


def random_split(rng: np.random.Generator, n: int, k: int, decimals: int | None = None):
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    prob = np.exp(logits)
    prob /= prob.sum(axis=1, keepdims=True)
    if decimals is not None:
        prob = np.round(prob, decimals)  # many tied scores
    return y, prob


def assert_matches_materialised(y: np.ndarray, prob: np.ndarray, counts: np.ndarray, **options) -> None:
    """metrics_for_counts(..., **options) row b equals compute_metrics(..., **options) on resample b, drawn out."""
    got = metrics_for_counts(y, prob, counts, **options)
    assert set(got) == set(compute_metrics(y, prob, **options))
    for name in got:
        assert got[name].shape == (len(counts),), name
    for b, row in enumerate(counts):
        idx = np.repeat(np.arange(len(y)), row)
        want = compute_metrics(y[idx], prob[idx], **options)
        for name in got:
            g, w = got[name][b], want[name]
            if math.isnan(w):
                assert math.isnan(g), (name, b, g)
            else:
                # Newton fits stop at a relative step of 1e-10, so they agree to about that, not to rounding
                tol = 1e-7 if name.startswith("calibration") else 1e-9
                assert g == pytest.approx(w, rel=tol, abs=1e-12), (name, b, row.tolist())


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("decimals", [None, 1])
def test_multinomial_resamples_equal_sklearn(k: int, decimals: int | None) -> None:
    rng = np.random.default_rng([k, decimals or 0])
    n = 60
    y, prob = random_split(rng, n, k, decimals)
    if decimals is not None:
        assert len(np.unique(prob[:, -1])) < n // 3  # the scores really are tied
    counts = rng.multinomial(n, np.full(n, 1 / n), size=40)
    assert_matches_materialised(y, prob, counts)
    assert_matches_materialised(y, prob, counts, ordinal=True)


@pytest.mark.parametrize("decimals", [None, 1])
def test_binary_with_a_threshold_equals_materialised(decimals: int | None) -> None:
    rng = np.random.default_rng([2, decimals or 0, 7])
    y, prob = random_split(rng, 60, 2, decimals)
    counts = rng.multinomial(60, np.full(60, 1 / 60), size=30)
    threshold = 0.3 if decimals is None else float(np.median(prob[:, 1]))  # with ties: a score itself
    assert_matches_materialised(y, prob, counts, threshold=threshold)
    moved = metrics_for_counts(y, prob, counts, threshold=threshold)["sensitivity"]
    assert not np.allclose(moved, metrics_for_counts(y, prob, counts)["sensitivity"])


@pytest.mark.parametrize("k", [2, 3, 5])
def test_arbitrary_count_vectors_equal_sklearn(k: int) -> None:
    """Counts need not sum to n, and may be zero for most samples."""
    rng = np.random.default_rng(100 + k)
    y, prob = random_split(rng, 30, k, decimals=1)
    counts = rng.integers(0, 4, size=(30, 30)) * (rng.random((30, 30)) < 0.5)
    counts[counts.sum(axis=1) == 0, 0] = 1
    assert_matches_materialised(y, prob, counts)
    assert_matches_materialised(y, prob, counts, ordinal=True)


@pytest.mark.parametrize("k", [3, 5])
def test_resamples_with_an_absent_class(k: int) -> None:
    rng = np.random.default_rng(200 + k)
    y, prob = random_split(rng, 50, k)
    counts = rng.multinomial(50, np.full(50, 1 / 50), size=k)
    for c in range(k):
        counts[c, y == c] = 0  # resample c lacks class c entirely
        assert counts[c].sum() > 0
    assert_matches_materialised(y, prob, counts, ordinal=True)
    got = metrics_for_counts(y, prob, counts)
    assert all(math.isnan(got[f"recall_c{c}"][c]) for c in range(k))  # a class absent from a resample: 0/0


@pytest.mark.parametrize("k", [2, 3, 5])
def test_resamples_with_a_single_class(k: int) -> None:
    rng = np.random.default_rng(300 + k)
    y, prob = random_split(rng, 40, k)
    counts = np.zeros((k + 1, 40), dtype=int)
    for c in range(k):
        counts[c, y == c] = rng.integers(1, 4, (y == c).sum())
    counts[k, np.flatnonzero(y == 0)[0]] = 5  # one sample drawn 5 times
    got = metrics_for_counts(y, prob, counts)
    assert np.isnan(got["auroc"]).all()
    if k == 2:  # one class: no logistic fit, and average precision needs positives
        assert np.isnan(got["calibration_slope"]).all() and np.isnan(got["calibration_intercept"]).all()
        assert np.isnan(got["auprc"][[0, 2]]).all() and np.isfinite(got["auprc"][1])
    assert_matches_materialised(y, prob, counts)


def test_single_class_single_prediction_kappa_nan_in_both() -> None:
    y = np.array([0, 0, 1, 1])
    prob = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    counts = np.array([[2, 1, 0, 0], [0, 0, 3, 0]])  # one class, predicted as itself throughout
    got = metrics_for_counts(y, prob, counts)
    assert np.isnan(got["kappa"]).all()
    assert np.isnan(got["auroc"]).all()
    assert_matches_materialised(y, prob, counts)


def test_more_resamples_than_one_chunk() -> None:
    """Rows are computed in blocks of CHUNK; the results must not depend on the blocking."""
    rng = np.random.default_rng(7)
    y, prob = random_split(rng, 25, 3, decimals=1)
    counts = rng.multinomial(25, np.full(25, 1 / 25), size=CHUNK + 13)
    whole = metrics_for_counts(y, prob, counts)
    for name in whole:
        assert whole[name].shape == (CHUNK + 13,)
    picked = [0, CHUNK - 1, CHUNK, CHUNK + 12]
    alone = metrics_for_counts(y, prob, counts[picked])
    for name in whole:
        np.testing.assert_allclose(whole[name][picked], alone[name], rtol=1e-12, equal_nan=True)
    assert_matches_materialised(y, prob, counts[picked])


@pytest.mark.parametrize("names", [("auroc", "accuracy"), ("ece",), ("calibration_slope", "sensitivity")])
def test_named_metrics_equal_those_of_the_full_computation(names: tuple[str, ...]) -> None:
    """Asking for some metrics skips the others' cost and changes none of the values."""
    rng = np.random.default_rng(11)
    y, prob = random_split(rng, 40, 2)
    counts = rng.multinomial(40, np.full(40, 1 / 40), size=30)
    whole = metrics_for_counts(y, prob, counts, threshold=0.4)
    some = metrics_for_counts(y, prob, counts, threshold=0.4, names=names)
    assert set(some) == set(names)
    for name in names:
        np.testing.assert_array_equal(some[name], whole[name])


def test_binary_auroc_equals_sklearn_with_sample_weight() -> None:
    rng = np.random.default_rng(8)
    n = 80
    positive = rng.random(n) < 0.4
    score = np.round(rng.random(n) + 0.3 * positive, 1)  # ties
    counts = rng.integers(0, 5, size=(20, n))
    got = binary_auroc(positive, score, counts.astype(float))
    for b in range(20):
        assert got[b] == pytest.approx(roc_auc_score(positive, score, sample_weight=counts[b]), rel=1e-12)


@pytest.mark.parametrize("decimals", [None, 1])
def test_average_precision_equals_sklearn_with_sample_weight(decimals: int | None) -> None:
    rng = np.random.default_rng(18)
    n = 80
    positive = rng.random(n) < 0.4
    score = rng.random(n) + 0.3 * positive
    score = np.round(score, decimals) if decimals is not None else score
    counts = rng.integers(0, 5, size=(20, n)) * (rng.random((20, n)) < 0.6)  # many zero weights
    got = average_precision_counts(positive, score, counts.astype(float))
    for b in range(20):
        want = average_precision_score(positive, score, sample_weight=counts[b])
        np.testing.assert_allclose(got[b], want, rtol=1e-12, err_msg=str(b))


def test_average_precision_nan_without_positives() -> None:
    positive = np.array([True, False, False])
    got = average_precision_counts(positive, np.array([0.9, 0.1, 0.5]), np.array([[0.0, 2, 1], [1, 1, 1]]))
    assert math.isnan(got[0])
    np.testing.assert_allclose(got[1], 1.0)


def test_binary_auroc_all_tied_is_one_half() -> None:
    positive = np.array([True, False, True, False, False])
    score = np.full(5, 0.3)
    counts = np.array([[1, 1, 1, 1, 1], [3, 1, 0, 0, 2]], dtype=float)
    np.testing.assert_allclose(binary_auroc(positive, score, counts), [0.5, 0.5])


def test_confusion_counts_equals_weighted_confusion_matrix() -> None:
    rng = np.random.default_rng(9)
    y, pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    counts = rng.integers(0, 3, size=(6, 50)).astype(float)
    got = confusion_counts(y, pred, counts, 4)
    for b in range(6):
        np.testing.assert_array_equal(got[b], confusion_matrix(y, pred, labels=range(4), sample_weight=counts[b]))


@st.composite
def resample_cases(draw):
    k = draw(st.sampled_from([2, 3, 5]))
    n = draw(st.integers(2, 25))
    y = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    # probabilities on a coarse grid: ties in scores and in the argmax
    raw = np.array(draw(st.lists(st.lists(st.integers(0, 4), min_size=k, max_size=k), min_size=n, max_size=n)),
                   dtype=float) + 0.5 * draw(st.booleans())
    raw[raw.sum(axis=1) == 0] = 1.0
    prob = raw / raw.sum(axis=1, keepdims=True)
    n_resamples = draw(st.integers(1, 6))
    counts = np.array(draw(st.lists(st.lists(st.integers(0, 3), min_size=n, max_size=n),
                                    min_size=n_resamples, max_size=n_resamples)))
    counts[counts.sum(axis=1) == 0, draw(st.integers(0, n - 1))] = 1
    options = {"ordinal": draw(st.booleans())}
    if k == 2 and draw(st.booleans()):
        options["threshold"] = draw(st.sampled_from(sorted(set(prob[:, 1].tolist()))))  # on a score: p >= t
    return y, prob, counts, options


@settings(max_examples=50, deadline=None)
@given(resample_cases())
def test_property_matches_materialised_resamples(case) -> None:
    y, prob, counts, options = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_matches_materialised(y, prob, counts, **options)
