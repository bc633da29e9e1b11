"""The vectorised val selection metric equals the sklearn-based one for every candidate."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from medtransfer.evaluation.metrics import auroc
from medtransfer.evaluation.selection import accuracy_many, as_scores, auroc_many, selection_values


def random_probs(rng: np.random.Generator, m: int, n: int, k: int, decimals: int | None) -> np.ndarray:
    prob = rng.dirichlet(np.ones(k), size=(m, n))
    # Rounding makes many exact ties, the case where a rank formula most easily disagrees with sklearn.
    return (np.round(prob, decimals) if decimals is not None else prob).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_binary_auroc_matches_sklearn(seed, decimals):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    prob = random_probs(rng, 7, 60, 2, decimals)
    expected = [auroc(y, p) for p in prob]
    assert auroc_many(y, prob) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("decimals", [None, 1])
def test_multiclass_auroc_with_an_absent_class_matches_sklearn(seed, decimals):
    rng = np.random.default_rng(seed)
    y = rng.choice([0, 1, 3, 4], 80)  # class 2 never occurs: it must be left out of the macro mean
    prob = random_probs(rng, 5, 80, 5, decimals)
    expected = [auroc(y, p) for p in prob]
    assert auroc_many(y, prob) == pytest.approx(expected, abs=1e-12)


def test_auroc_is_nan_where_undefined():
    rng = np.random.default_rng(0)
    prob = random_probs(rng, 3, 10, 2, None)
    assert np.isnan(auroc_many(np.ones(10, dtype=int), prob)).all()  # one class only
    assert np.isnan(auroc_many(np.zeros(10, dtype=int), random_probs(rng, 2, 10, 3, None))).all()
    prob[1, 4, 1] = np.nan  # a diverged candidate
    got = auroc_many(np.arange(10) % 2, prob)
    assert np.isnan(got[1]) and np.isfinite(got[[0, 2]]).all()


@pytest.mark.parametrize("k", [2, 4])
def test_accuracy_matches_sklearn_including_argmax_ties(k):
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 50)
    prob = random_probs(rng, 6, 50, k, 1)
    expected = [accuracy_score(y, p.argmax(1)) for p in prob]
    assert accuracy_many(y, prob) == pytest.approx(expected)


def test_selection_values_and_scores():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 30)
    prob = random_probs(rng, 3, 30, 2, None)
    loss = np.array([0.5, np.nan, 0.2])
    assert selection_values("val_loss", y, prob, loss) == pytest.approx([-0.5, np.nan, -0.2], nan_ok=True)
    assert np.array_equal(selection_values("val_auroc", y, prob, loss), auroc_many(y, prob))
    assert np.array_equal(selection_values("val_accuracy", y, prob, loss), accuracy_many(y, prob))
    scores = as_scores(selection_values("val_loss", y, prob, loss))
    assert scores[1] == -np.inf and int(np.argmax(scores)) == 2
    with pytest.raises(ValueError):
        selection_values("val_f1", y, prob, loss)
