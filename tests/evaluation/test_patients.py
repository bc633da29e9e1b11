"""Pooling image probabilities into one prediction per patient."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.evaluation.patients import pool_by_patient


def data():
    groups = np.array(["p2", "p1", "p1", "p2", "p1"])
    y = np.array([1, 0, 0, 1, 0])
    prob = np.array([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.7, 0.3]])
    return groups, y, prob


def test_mean_pooling_per_patient():
    p = pool_by_patient(*data(), how="mean")
    assert list(p.ids) == ["p1", "p2"] and list(p.y) == [0, 1] and list(p.n_images) == [3, 2]
    assert np.allclose(p.prob, [[(0.9 + 0.4 + 0.7) / 3, (0.1 + 0.6 + 0.3) / 3], [0.4, 0.6]])


def test_max_pooling_takes_the_highest_slice_probability():
    p = pool_by_patient(*data(), how="max")
    assert np.allclose(p.prob, [[0.4, 0.6], [0.2, 0.8]])  # p1's slices: 0.1, 0.6, 0.3 positive; p2's: 0.8, 0.4


def test_max_of_a_sure_and_an_unsure_slice_is_the_sure_one():
    p = pool_by_patient(np.array(["a", "a"]), np.array([1, 1]), np.array([[0.1, 0.9], [0.9, 0.1]]), how="max")
    assert p.prob[0, 1] == pytest.approx(0.9) and p.prob[0, 0] == pytest.approx(0.1)


def test_max_pooling_of_grades_is_as_high_as_the_highest_slice():
    slices = np.array([[0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0]])
    p = pool_by_patient(np.zeros(3), np.zeros(3, dtype=int), slices, how="max")
    # P(grade >= 1) = max(0.3, 0.8, 0.5), P(grade >= 2) = max(0.1, 0.5, 0.0).
    assert np.allclose(p.prob, [[0.2, 0.3, 0.5]])


def test_max_pooling_is_a_distribution_whose_tails_are_slice_maxima():
    rng = np.random.default_rng(1)
    prob, groups = rng.dirichlet([1, 1, 1, 1], 60), rng.integers(0, 12, 60)
    p = pool_by_patient(groups, np.zeros(60, dtype=int), prob, how="max")
    assert (p.prob >= 0).all() and np.allclose(p.prob.sum(axis=1), 1)
    for row, patient in zip(p.prob, p.ids, strict=True):
        mine = prob[groups == patient]
        for c in range(1, 4):
            assert row[c:].sum() == pytest.approx(mine[:, c:].sum(axis=1).max())


def test_vote_pooling_counts_slice_decisions():
    p = pool_by_patient(*data(), how="vote")
    assert np.allclose(p.prob, [[2 / 3, 1 / 3], [0.5, 0.5]])


@pytest.mark.parametrize("how", ["mean", "max", "vote"])
def test_one_image_per_patient_is_unchanged_for_mean_and_max(how):
    rng = np.random.default_rng(0)
    prob = rng.dirichlet([1, 1, 1], 20)
    p = pool_by_patient(np.arange(20), rng.integers(0, 3, 20), prob, how)
    expected = np.eye(3)[prob.argmax(1)] if how == "vote" else prob
    assert np.allclose(p.prob, expected)
