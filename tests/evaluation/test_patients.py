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


def test_max_pooling_is_renormalised():
    p = pool_by_patient(*data(), how="max")
    assert np.allclose(p.prob[0], np.array([0.9, 0.6]) / 1.5)
    assert np.allclose(p.prob.sum(axis=1), 1)


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
