"""DeLong's and McNemar's tests on independent samples, and Holm's correction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from evaluation.paired_samples import binormal_pair
from scipy.stats import binomtest, norm
from sklearn.metrics import roc_auc_score

from medtransfer.evaluation.paired_tests import delong_test, holm, mcnemar_test


def structural_delong(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict[str, float]:
    """DeLong, DeLong & Clarke-Pearson (1988) directly: placements over all (positive, negative) pairs.

    psi(x, y) = 1 if x > y, 1/2 if x = y, 0 otherwise; V10(x_i) = mean_j psi(x_i, y_j), V01(y_j) = mean_i psi(x_i, y_j);
    S10, S01 are the 2x2 sample covariances (denominators m - 1, n - 1) of the placements of the two models;
    var(AUC_a - AUC_b) = c' (S10 / m + S01 / n) c with c = (1, -1).
    """
    pos, neg = y == 1, y == 0
    m, n = pos.sum(), neg.sum()
    v10, v01, auc = [], [], []
    for score in (score_a, score_b):
        x, z = score[pos], score[neg]
        psi = np.array([[1.0 if xi > zj else 0.5 if xi == zj else 0.0 for zj in z] for xi in x])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        auc.append(psi.mean())
    s10 = np.array([[np.sum((v10[r] - auc[r]) * (v10[s] - auc[s])) / (m - 1) for s in range(2)] for r in range(2)])
    s01 = np.array([[np.sum((v01[r] - auc[r]) * (v01[s] - auc[s])) / (n - 1) for s in range(2)] for r in range(2)])
    c = np.array([1.0, -1.0])
    se = math.sqrt(c @ (s10 / m + s01 / n) @ c)
    z = (auc[0] - auc[1]) / se
    return {"auc_a": auc[0], "auc_b": auc[1], "diff": auc[0] - auc[1], "se": se, "z": z,
            "p": 2 * (1 - norm.cdf(abs(z)))}


def test_delong_matches_structural_components_on_fixed_example_with_ties() -> None:
    y = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    # ties within a class, across classes, and across models
    score_a = np.array([0.9, 0.8, 0.8, 0.7, 0.55, 0.4, 0.3, 0.8, 0.6, 0.5, 0.5, 0.4, 0.4, 0.3, 0.2, 0.1, 0.1])
    score_b = np.array([0.7, 0.7, 0.6, 0.6, 0.5, 0.5, 0.2, 0.6, 0.6, 0.5, 0.5, 0.45, 0.3, 0.3, 0.2, 0.2, 0.0])
    got, want = delong_test(y, score_a, score_b), structural_delong(y, score_a, score_b)
    assert set(got) == {"auc_a", "auc_b", "diff", "se", "z", "p"}
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-10), key
    assert got["auc_a"] == pytest.approx(roc_auc_score(y, score_a), rel=1e-12)
    assert got["auc_b"] == pytest.approx(roc_auc_score(y, score_b), rel=1e-12)
    assert got["diff"] == pytest.approx(roc_auc_score(y, score_a) - roc_auc_score(y, score_b), rel=1e-12)
    assert 0 < got["p"] < 1


def test_delong_matches_structural_components_on_random_data() -> None:
    rng = np.random.default_rng(16)
    y, sa, sb = binormal_pair(rng, 120, 1.0, 0.6, 0.4)
    sa, sb = np.round(sa, 1), np.round(sb, 1)
    got, want = delong_test(y, sa, sb), structural_delong(y, sa, sb)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-10), key


def test_delong_is_antisymmetric_and_rank_invariant() -> None:
    y, sa, sb = binormal_pair(np.random.default_rng(17), 200, 1.0, 0.7, 0.5)
    ab, ba = delong_test(y, sa, sb), delong_test(y, sb, sa)
    assert ba["diff"] == pytest.approx(-ab["diff"]) and ba["z"] == pytest.approx(-ab["z"])
    assert ba["p"] == pytest.approx(ab["p"]) and ba["se"] == pytest.approx(ab["se"])
    transformed = delong_test(y, np.exp(sa), 3 * sb - 1)  # monotone maps change no ranks
    for key in ab:
        assert transformed[key] == pytest.approx(ab[key], rel=1e-12), key


def test_delong_rejects_at_the_nominal_rate_under_the_null() -> None:
    """Equal true AUROCs (mu_a = mu_b), correlated models: p < 0.05 in 5% of 2,000 experiments (SE 0.005)."""
    rejected = 0
    reps = 2000
    for data_seed in np.random.SeedSequence(99).spawn(reps):
        y, sa, sb = binormal_pair(np.random.default_rng(data_seed), 200, 1.0, 1.0, 0.5)
        rejected += delong_test(y, sa, sb)["p"] < 0.05
    assert 0.035 <= rejected / reps <= 0.065, rejected / reps


def test_delong_identical_scores() -> None:
    y, sa, _ = binormal_pair(np.random.default_rng(18), 80, 1.0, 1.0, 0.0)
    out = delong_test(y, sa, sa.copy())
    assert out["diff"] == 0 and out["se"] == 0 and out["z"] == 0 and out["p"] == 1.0


def test_delong_undefined_cases() -> None:
    score = np.array([0.1, 0.4, 0.35, 0.8])
    assert all(math.isnan(v) for v in delong_test(np.zeros(4, dtype=int), score, score[::-1]).values())
    # the positive scores 0.35 (beats 0.1 of 0.1, 0.4, 0.8) and, reversed, 0.4 (beats 0.35 and 0.1 of 0.8, 0.35, 0.1)
    one_positive = delong_test(np.array([0, 0, 1, 0]), score, score[::-1])
    assert one_positive["auc_a"] == pytest.approx(1 / 3) and one_positive["auc_b"] == pytest.approx(2 / 3)
    assert math.isnan(one_positive["se"]) and math.isnan(one_positive["p"])
    with pytest.raises(ValueError):
        delong_test(np.array([0, 1, 2, 1]), score, score)
    with pytest.raises(ValueError):
        delong_test(np.array([0, 1, 0, 1]), score, score[:3])


def test_mcnemar_hand_built_example() -> None:
    # 20 pairs: 6 both right, 2 both wrong, b10 = 9 only a right, b01 = 3 only b right
    correct_a = np.array([True] * 6 + [False] * 2 + [True] * 9 + [False] * 3)
    correct_b = np.array([True] * 6 + [False] * 2 + [False] * 9 + [True] * 3)
    out = mcnemar_test(correct_a, correct_b)
    assert (out["b01"], out["b10"]) == (3, 9)
    assert out["p"] == pytest.approx(binomtest(9, 12, 0.5, alternative="two-sided").pvalue, rel=1e-12)
    # by hand: 2 P(X <= 3), X ~ Binomial(12, 1/2) = 2 (1 + 12 + 66 + 220) / 4096 = 598 / 4096
    assert out["p"] == pytest.approx(598 / 4096, rel=1e-12)
    assert mcnemar_test(correct_b, correct_a)["p"] == out["p"]


def test_mcnemar_equals_scipy_binomtest_on_every_small_table() -> None:
    """The doubled smaller tail equals binomtest's two-sided p, even and odd totals, balanced and not."""
    for total in range(1, 41):
        for b10 in range(total + 1):
            a = np.r_[np.ones(b10, bool), np.zeros(total - b10, bool), True]  # one concordant pair as well
            got = mcnemar_test(a, np.r_[~a[:-1], True])["p"]
            assert got == pytest.approx(binomtest(b10, total, 0.5).pvalue, rel=1e-12), (b10, total)


def test_mcnemar_without_discordant_pairs() -> None:
    correct = np.array([True, False, True, True])
    assert mcnemar_test(correct, correct.copy()) == {"b01": 0, "b10": 0, "p": 1.0}


def test_mcnemar_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        mcnemar_test(np.array([1, 0, 1]), np.array([0, 0, 1]))
    with pytest.raises(ValueError):
        mcnemar_test(np.array([True, False]), np.array([True, False, True]))


def test_holm_hand_computed() -> None:
    # sorted: 0.01, 0.03, 0.04, 0.2 with m = 4 multipliers 4, 3, 2, 1 -> 0.04, 0.09, 0.08, 0.2
    # running max keeps them monotone: 0.04, 0.09, 0.09, 0.2; back in input order [0.01, 0.04, 0.03, 0.2]:
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.2]), [0.04, 0.09, 0.09, 0.2], rtol=1e-12)


def test_holm_nan_cap_ties_and_empty() -> None:
    # NaN is not a test: m = 4 as above, and the NaN stays where it was
    np.testing.assert_allclose(holm([0.01, float("nan"), 0.04, 0.03, 0.2]), [0.04, np.nan, 0.09, 0.09, 0.2],
                               rtol=1e-12)
    # 2 x 0.5 = 1.0, then 1 x 0.6 lifted to the running max 1.0; 3 x 0.4 = 1.2 capped at 1
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.4, 0.9, 0.5]), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(holm([0.02, 0.02]), [0.04, 0.04])
    assert holm([]).shape == (0,)
    assert np.isnan(holm([float("nan")])).all()
    with pytest.raises(ValueError):
        holm([0.5, 1.5])
