"""Top-label ECE and reliability curves against a direct per-bin loop, simulations and materialised resamples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtransfer.evaluation.calibration import ece_for_counts, expected_calibration_error, reliability_curve


def loop_ece(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> float:
    """ECE by an explicit loop over bins (lo, hi], the first bin also taking a confidence of exactly 0."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    conf = [max(row) for row in prob.tolist()]
    correct = [int(np.argmax(row)) == int(label) for row, label in zip(prob, y)]
    total = 0.0
    for i in range(bins):
        lo, hi = edges[i], edges[i + 1]
        members = [j for j, c in enumerate(conf) if (lo < c <= hi) or (i == 0 and c == lo)]
        if members:
            acc = sum(correct[j] for j in members) / len(members)
            mean_conf = sum(conf[j] for j in members) / len(members)
            total += abs(acc - mean_conf) * len(members) / len(conf)
    return total


def draw_labels(rng: np.random.Generator, prob: np.ndarray) -> np.ndarray:
    """One label per row drawn from that row's distribution."""
    y = (rng.random(len(prob))[:, None] > np.cumsum(prob, axis=1)).sum(axis=1)
    return np.minimum(y, prob.shape[1] - 1)  # guard against cumsum ending a hair below 1


def calibrated(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from the predicted distribution itself: calibrated in every sense, top-label included."""
    prob = rng.dirichlet(np.ones(k), n)
    return draw_labels(rng, prob), prob


def random_probs(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels from the probabilities at a lower temperature, so bins are over- and under-confident.

    With gaps of one sign in every bin, ECE = |sum(correct - conf)| / n whatever the binning, and a test could
    not tell one bin rule from another.
    """
    prob = rng.dirichlet(np.full(k, 0.7), n)
    sharp = prob**2 / (prob**2).sum(axis=1, keepdims=True)
    return draw_labels(rng, sharp), prob


def with_edge_ties(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes; about half the rows have a top confidence exactly on a bin edge (linspace value or k/15)."""
    _, prob = random_probs(rng, n, 3)
    edges = np.linspace(0, 1, 16)
    tied = rng.random(n) < 0.5
    k = rng.integers(6, 16, n)  # k/15 > 1/3, so the tied value is the row maximum
    top = np.where(rng.random(n) < 0.5, edges[k], k / 15)
    rows = np.c_[top, (1 - top) / 2, (1 - top) / 2]
    rows = np.take_along_axis(rows, np.argsort(rng.random((n, 3)), axis=1), axis=1)  # top class at random
    prob[tied] = rows[tied]
    sharp = prob**2 / (prob**2).sum(axis=1, keepdims=True)
    return draw_labels(rng, sharp), prob


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("bins", [1, 10, 15])
def test_equals_per_bin_loop(k: int, bins: int) -> None:
    rng = np.random.default_rng([k, bins])
    y, prob = random_probs(rng, 300, k)
    assert expected_calibration_error(y, prob, bins) == pytest.approx(loop_ece(y, prob, bins), rel=1e-12)


def test_equals_per_bin_loop_with_confidences_on_edges() -> None:
    y, prob = with_edge_ties(np.random.default_rng(1), 400)
    assert np.isin(prob.max(axis=1), np.linspace(0, 1, 16)).sum() > 50
    assert expected_calibration_error(y, prob) == pytest.approx(loop_ece(y, prob), rel=1e-12)


def test_hand_computed_example() -> None:
    y = np.array([1, 0, 1, 0])
    p1 = np.array([0.95, 0.95, 0.35, 0.35])  # confidences 0.95, 0.95, 0.65, 0.65
    # rows 1-2 predict class 1 at 0.95, bin (14/15, 1]: one right -> accuracy 1/2, gap 0.45, weight 2/4
    # rows 3-4 predict class 0 at 0.65, bin (9/15, 10/15]: one right -> accuracy 1/2, gap 0.15, weight 2/4
    # ECE = 0.45 / 2 + 0.15 / 2 = 0.3
    assert expected_calibration_error(y, np.c_[1 - p1, p1]) == pytest.approx(0.3)


def test_confidence_on_an_edge_belongs_to_the_bin_it_closes() -> None:
    edges = np.linspace(0, 1, 16)
    p1 = np.r_[edges[8:], 0.5]  # 8/15 ... 1 exactly, and 0.5 inside (7/15, 8/15]
    curve = reliability_curve(np.ones(len(p1), dtype=int), np.c_[1 - p1, p1])
    want = np.zeros(15, dtype=int)
    want[7:] = 1
    want[7] += 1  # 0.5 and 8/15 share (7/15, 8/15]
    np.testing.assert_array_equal(curve["count"], want)
    np.testing.assert_array_equal(curve["edges"], edges)


def test_reliability_curve_per_bin_values() -> None:
    rng = np.random.default_rng(2)
    y, prob = random_probs(rng, 500, 4)
    curve = reliability_curve(y, prob, bins=10)
    conf, correct = prob.max(axis=1), prob.argmax(axis=1) == y
    assert curve["count"].sum() == 500
    for i in range(10):
        members = (conf > curve["edges"][i]) & (conf <= curve["edges"][i + 1])
        assert curve["count"][i] == members.sum()
        if members.any():
            assert curve["confidence"][i] == pytest.approx(conf[members].mean())
            assert curve["accuracy"][i] == pytest.approx(correct[members].mean())
        else:
            assert math.isnan(curve["confidence"][i]) and math.isnan(curve["accuracy"][i])
    assert math.isnan(curve["confidence"][0])  # with 4 classes no top confidence is below 1/4
    filled = curve["count"] > 0
    ece = (np.abs(curve["accuracy"] - curve["confidence"])[filled] * curve["count"][filled]).sum() / 500
    assert ece == pytest.approx(expected_calibration_error(y, prob, bins=10))


@pytest.mark.parametrize("k", [2, 3])
def test_calibrated_predictions_have_ece_near_zero(k: int) -> None:
    """Only binning noise remains: about sum_b sqrt(2 n_b p(1-p) / pi) / n, i.e. 0.003 at n = 200,000."""
    y, prob = calibrated(np.random.default_rng(3 + k), 200_000, k)
    assert expected_calibration_error(y, prob) < 0.01


def test_overconfident_predictions_have_large_ece() -> None:
    """Always 95% sure, right 70% of the time: the whole split is in one bin, ECE = 0.95 - 0.7 = 0.25."""
    rng = np.random.default_rng(5)
    n = 100_000
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.7, y, 1 - y)
    prob = np.where(pred[:, None] == np.arange(2), 0.95, 0.05)
    assert expected_calibration_error(y, prob) == pytest.approx(0.25, abs=0.01)


def test_sharpening_calibrated_predictions_raises_ece() -> None:
    y, prob = calibrated(np.random.default_rng(6), 50_000, 3)
    sharp = prob ** (1 / 0.3)  # temperature 0.3 on the log-probabilities: same argmax, more confident
    sharp /= sharp.sum(axis=1, keepdims=True)
    assert expected_calibration_error(y, sharp) > 0.1 > 0.01 > expected_calibration_error(y, prob)


def assert_counts_match_materialised(y: np.ndarray, prob: np.ndarray, counts: np.ndarray, bins: int = 15) -> None:
    got = ece_for_counts(y, prob, counts, bins)
    assert got.shape == (len(counts),)
    for b, row in enumerate(counts):
        if row.sum() == 0:
            assert math.isnan(got[b])
            continue
        idx = np.repeat(np.arange(len(y)), row)
        assert got[b] == pytest.approx(expected_calibration_error(y[idx], prob[idx], bins), rel=1e-9, abs=1e-12), b


@pytest.mark.parametrize("bins", [5, 15])
def test_counts_equal_materialised_resamples_with_edge_ties(bins: int) -> None:
    rng = np.random.default_rng(7 + bins)
    y, prob = with_edge_ties(rng, 80)
    multinomial = rng.multinomial(80, np.full(80, 1 / 80), size=30)
    arbitrary = rng.integers(0, 4, size=(20, 80)) * (rng.random((20, 80)) < 0.3)  # sums vary, many zeros
    counts = np.r_[multinomial, arbitrary, np.zeros((1, 80), dtype=int)]
    assert_counts_match_materialised(y, prob, counts, bins)


def test_counts_of_ones_give_the_whole_split() -> None:
    y, prob = random_probs(np.random.default_rng(9), 120, 3)
    got = ece_for_counts(y, prob, np.ones((2, 120)))
    np.testing.assert_allclose(got, expected_calibration_error(y, prob), rtol=1e-12)


@st.composite
def grid_cases(draw):
    """Probabilities on the 1/15 grid (every confidence on a bin edge) or a coarse off-grid one."""
    k = draw(st.sampled_from([2, 3]))
    n = draw(st.integers(1, 20))
    rows = []
    for _ in range(n):
        a = draw(st.integers(0, 15))
        b = draw(st.integers(0, 15 - a))
        rows.append([a, 15 - a] if k == 2 else [a, b, 15 - a - b])
    prob = np.array(rows, dtype=float) / 15
    if draw(st.booleans()):
        prob = np.round(prob + 0.01, 2)  # off the grid, still tied within the split
        prob = np.minimum(prob, 1.0)
    y = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    n_resamples = draw(st.integers(1, 5))
    counts = np.array(draw(st.lists(st.lists(st.integers(0, 3), min_size=n, max_size=n),
                                    min_size=n_resamples, max_size=n_resamples)))
    return y, prob, counts, draw(st.sampled_from([3, 15]))


@settings(max_examples=60, deadline=None)
@given(grid_cases())
def test_property_counts_match_materialised(case) -> None:
    y, prob, counts, bins = case
    assert_counts_match_materialised(y, prob, counts, bins)


def test_empty_split_is_nan() -> None:
    assert math.isnan(expected_calibration_error(np.array([], dtype=int), np.zeros((0, 2))))


def test_invalid_inputs_raise() -> None:
    y, prob = random_probs(np.random.default_rng(10), 10, 2)
    with pytest.raises(ValueError):
        expected_calibration_error(y, prob, bins=0)
    with pytest.raises(ValueError):
        expected_calibration_error(y, prob[:, 1])
    with pytest.raises(ValueError):
        expected_calibration_error(y[:5], prob)
    with pytest.raises(ValueError):
        expected_calibration_error(y, prob * 2)
    with pytest.raises(ValueError):
        ece_for_counts(y, prob, np.ones((3, 9)))
    with pytest.raises(ValueError):
        ece_for_counts(y, prob, -np.ones((3, 10)))
