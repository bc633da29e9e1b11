"""Paired model comparisons: bootstrap differences, DeLong, McNemar, Holm and the comparison table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from sklearn.metrics import roc_auc_score

from medtransfer.evaluation.bootstrap import BootstrapSpec, bootstrap_ci, percentile_interval, resample_counts
from medtransfer.evaluation.metrics import compute_metrics
from medtransfer.evaluation.paired import (
    COLUMNS,
    compare_models,
    delong_test,
    holm,
    mcnemar_test,
    paired_bootstrap_diff,
)


def binormal_pair(rng: np.random.Generator, n: int, mu_a: float, mu_b: float,
                  rho: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two correlated scores: model m scores a positive N(mu_m, 1) and a negative N(0, 1).

    Both models share a N(0, rho) part of their noise (per sample), so their errors are correlated with
    correlation rho; each model's own scores stay unit-variance normal within each class.
    """
    y = rng.integers(0, 2, n)
    shared = math.sqrt(rho) * rng.normal(size=n)
    score_a = mu_a * y + shared + math.sqrt(1 - rho) * rng.normal(size=n)
    score_b = mu_b * y + shared + math.sqrt(1 - rho) * rng.normal(size=n)
    return y, score_a, score_b


def as_prob(score: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """Two-column probabilities, P(class 1) a logistic of the score (monotone: AUROC unchanged)."""
    p1 = 1 / (1 + np.exp(-(score - shift)))
    return np.c_[1 - p1, p1]


def test_paired_bootstrap_covers_known_auroc_difference() -> None:
    """Acceptance criterion: the 95% paired interval covers the true AUROC difference in 93-97% of experiments.

    Binormal truth: with positives ~ N(mu, 1) and negatives ~ N(0, 1), AUROC = P(S+ > S-) = Phi(mu / sqrt(2)),
    since S+ - S- ~ N(mu, 2). mu_a = 1.5 and mu_b = 1.0 give the true difference
    Phi(1.5 / sqrt 2) - Phi(1 / sqrt 2) = 0.8556 - 0.7602 = 0.0953, whatever the noise correlation between the
    models (rho = 0.5 here, which makes the paired interval much narrower than an unpaired one would be).
    n = 400 samples (prevalence 1/2 on average), 500 resamples per interval, 600 experiments, seeds fixed once and
    never tuned. The Monte Carlo standard error of the coverage estimate is about 0.009 (0.93-0.97 is +-2.2 SE).
    Longer one-off runs put the true coverage of this set-up a little under nominal, as is usual for percentile
    intervals: 0.945 over 5,000 experiments at n = 400 (DeLong's Wald interval on the same data: 0.947) and
    0.946 over 2,000 at n = 800, so doubling n does not move it; this seed's 600 give about 0.935.
    """
    mu_a, mu_b, n, reps = 1.5, 1.0, 400, 600
    truth = norm.cdf(mu_a / math.sqrt(2)) - norm.cdf(mu_b / math.sqrt(2))
    assert truth == pytest.approx(0.0953, abs=1e-4)
    covered = 0
    for rep, data_seed in enumerate(np.random.SeedSequence(20240612).spawn(reps)):
        y, sa, sb = binormal_pair(np.random.default_rng(data_seed), n, mu_a, mu_b, rho=0.5)
        ci = paired_bootstrap_diff(y, as_prob(sa, mu_a / 2), as_prob(sb, mu_b / 2), BootstrapSpec(n=500, seed=rep),
                                   metrics=("auroc",))["auroc"]
        covered += ci["low"] <= truth <= ci["high"]
    coverage = covered / reps
    print(f"coverage {coverage:.4f}")
    assert 0.93 <= coverage <= 0.97, coverage


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("grouped", [False, True])
def test_paired_interval_equals_sklearn_on_materialised_resamples(k: int, grouped: bool) -> None:
    """Fewer resamples than one block: they are exactly resample_counts(n, groups, B, default_rng(seed))."""
    rng = np.random.default_rng([k, grouped])
    n, n_resamples = 60, 80
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    prob_a, prob_b = rng.dirichlet(np.ones(k), n), rng.dirichlet(np.ones(k), n)
    prob_a[np.arange(n), y] += 0.5
    prob_a /= prob_a.sum(axis=1, keepdims=True)
    groups = np.repeat(np.arange(20), 3)[rng.permutation(n)] if grouped else None
    spec = BootstrapSpec(n=n_resamples, level=0.9, seed=5)
    metrics = ("auroc", "accuracy", "f1_macro")
    got = paired_bootstrap_diff(y, prob_a, prob_b, spec, groups=groups, metrics=metrics)
    counts = resample_counts(n, groups, n_resamples, np.random.default_rng(spec.seed))
    diffs = {name: [] for name in metrics}
    for row in counts:
        idx = np.repeat(np.arange(n), row)
        a, b = compute_metrics(y[idx], prob_a[idx]), compute_metrics(y[idx], prob_b[idx])
        for name in metrics:
            diffs[name].append(a[name] - b[name])
    point_a, point_b = compute_metrics(y, prob_a), compute_metrics(y, prob_b)
    assert set(got) == set(metrics)
    for name in metrics:
        low, high = percentile_interval(np.array(diffs[name]), spec.level)
        assert got[name]["value"] == point_a[name] - point_b[name]
        assert got[name]["low"] == pytest.approx(low, rel=1e-9, abs=1e-12), name
        assert got[name]["high"] == pytest.approx(high, rel=1e-9, abs=1e-12), name


def test_each_model_sees_the_resamples_of_its_own_bootstrap_ci() -> None:
    """Against an always-right model (accuracy 1 on every resample) the difference is model a's accuracy - 1."""
    rng = np.random.default_rng(11)
    y, sa, _ = binormal_pair(rng, 300, 1.0, 1.0, 0.0)
    perfect = np.eye(2)[y] * 0.8 + 0.1
    spec = BootstrapSpec(n=700, seed=3)  # more than two blocks of resamples
    diff = paired_bootstrap_diff(y, as_prob(sa, 0.5), perfect, spec, metrics=("accuracy",))["accuracy"]
    alone = bootstrap_ci(y, as_prob(sa, 0.5), spec)["accuracy"]
    for key in ("value", "low", "high"):
        assert diff[key] == pytest.approx(alone[key] - 1, abs=1e-12), key


def test_pairing_narrows_the_interval_for_correlated_models() -> None:
    """Strongly correlated errors (rho = 0.9) cancel in the paired difference; each model's own interval does not."""
    y, sa, sb = binormal_pair(np.random.default_rng(12), 400, 1.2, 1.0, 0.9)
    spec = BootstrapSpec(n=1000, seed=0)
    paired = paired_bootstrap_diff(y, as_prob(sa), as_prob(sb), spec)["auroc"]
    single = bootstrap_ci(y, as_prob(sa), spec)["auroc"]
    assert paired["high"] - paired["low"] < 0.6 * (single["high"] - single["low"])


def test_identical_models_differ_by_exactly_zero() -> None:
    y, sa, _ = binormal_pair(np.random.default_rng(13), 100, 1.0, 1.0, 0.0)
    out = paired_bootstrap_diff(y, as_prob(sa), as_prob(sa), BootstrapSpec(n=300, seed=0))
    assert out == {name: {"value": 0.0, "low": 0.0, "high": 0.0} for name in ("auroc", "accuracy")}


def test_resamples_without_both_classes_are_dropped() -> None:
    """One positive in 8: about a third of resamples miss it, their AUROC difference is NaN and is left out."""
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    p_a = np.array([0.6, 0.1, 0.2, 0.7, 0.3, 0.4, 0.05, 0.15])
    p_b = np.array([0.9, 0.1, 0.2, 0.7, 0.3, 0.4, 0.05, 0.15])
    out = paired_bootstrap_diff(y, np.c_[1 - p_a, p_a], np.c_[1 - p_b, p_b], BootstrapSpec(n=500, seed=0))["auroc"]
    assert out["value"] == pytest.approx(6 / 7 - 1)
    assert np.isfinite(out["low"]) and np.isfinite(out["high"])
    assert -1 <= out["low"] <= out["value"] <= out["high"] <= 0


def test_same_seed_same_interval() -> None:
    y, sa, sb = binormal_pair(np.random.default_rng(14), 150, 1.0, 0.8, 0.3)
    a = paired_bootstrap_diff(y, as_prob(sa), as_prob(sb), BootstrapSpec(n=300, seed=1))
    b = paired_bootstrap_diff(y, as_prob(sa), as_prob(sb), BootstrapSpec(n=300, seed=1))
    c = paired_bootstrap_diff(y, as_prob(sa), as_prob(sb), BootstrapSpec(n=300, seed=2))
    assert a == b
    assert a["auroc"]["low"] != c["auroc"]["low"] and a["auroc"]["value"] == c["auroc"]["value"]


def test_paired_bootstrap_rejects_bad_input() -> None:
    y, sa, sb = binormal_pair(np.random.default_rng(15), 50, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap_diff(y, as_prob(sa), as_prob(sb), BootstrapSpec(n=10), metrics=("auc",))
    with pytest.raises(ValueError):
        paired_bootstrap_diff(y, as_prob(sa), as_prob(sb)[:40], BootstrapSpec(n=10))
    with pytest.raises(ValueError):
        paired_bootstrap_diff(y, as_prob(sa), as_prob(sb), BootstrapSpec(n=0))
    with pytest.raises(ValueError):
        paired_bootstrap_diff(y, as_prob(sa), as_prob(sb), BootstrapSpec(n=10), groups=np.arange(49))


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


def test_compare_models_binary_table() -> None:
    rng = np.random.default_rng(19)
    y, sa, sb = binormal_pair(rng, 300, 1.6, 0.6, 0.5)  # true AUROCs 0.871 and 0.664
    probs = {"good": as_prob(sa, 0.8), "worse": as_prob(sb, 0.3), "copy": as_prob(sa, 0.8)}
    spec = BootstrapSpec(n=400, seed=4)
    table = compare_models(y, probs, spec)
    assert list(table.columns) == list(COLUMNS)
    assert list(zip(table["a"], table["b"])) == [("good", "worse"), ("good", "copy"), ("worse", "copy")]
    same = table.iloc[1]
    for name in ("auroc", "accuracy"):
        assert (same[f"{name}_diff"], same[f"{name}_low"], same[f"{name}_high"]) == (0.0, 0.0, 0.0)
    assert same["delong_p"] == 1.0 and same["mcnemar_p"] == 1.0
    # each row is what the single-pair functions give (same seed, same resamples)
    row = table.iloc[0]
    diff = paired_bootstrap_diff(y, probs["good"], probs["worse"], spec)
    for name in ("auroc", "accuracy"):
        assert row[f"{name}_diff"] == diff[name]["value"]
        assert row[f"{name}_low"] == diff[name]["low"] and row[f"{name}_high"] == diff[name]["high"]
    assert row["delong_p"] == delong_test(y, probs["good"][:, 1], probs["worse"][:, 1])["p"]
    pred_a, pred_b = probs["good"].argmax(axis=1), probs["worse"].argmax(axis=1)
    assert row["mcnemar_p"] == mcnemar_test(pred_a == y, pred_b == y)["p"]
    assert row["auroc_diff"] > 0 and row["delong_p"] < 0.05
    np.testing.assert_allclose(table["delong_p_holm"], holm(table["delong_p"].tolist()))
    np.testing.assert_allclose(table["mcnemar_p_holm"], holm(table["mcnemar_p"].tolist()))
    assert (table["delong_p_holm"] >= table["delong_p"]).all()


def test_compare_models_multiclass_with_groups_and_chosen_pairs() -> None:
    rng = np.random.default_rng(20)
    n, k = 180, 3
    y = rng.integers(0, k, n)
    probs = {name: rng.dirichlet(np.ones(k), n) for name in ("x", "y", "z")}
    groups = np.repeat(np.arange(60), 3)
    table = compare_models(y, probs, BootstrapSpec(n=200, seed=0), groups=groups, pairs=[("z", "x"), ("y", "x")])
    assert table.shape == (2, len(COLUMNS))
    assert list(zip(table["a"], table["b"])) == [("z", "x"), ("y", "x")]
    assert table["delong_p"].isna().all() and table["delong_p_holm"].isna().all()
    assert table["mcnemar_p"].between(0, 1).all() and table["mcnemar_p_holm"].between(0, 1).all()
    assert np.isfinite(table[["auroc_low", "auroc_high", "accuracy_low", "accuracy_high"]].to_numpy()).all()


def test_compare_models_single_model_and_bad_pairs() -> None:
    y, sa, _ = binormal_pair(np.random.default_rng(21), 50, 1.0, 1.0, 0.0)
    empty = compare_models(y, {"only": as_prob(sa)}, BootstrapSpec(n=50))
    assert empty.shape == (0, len(COLUMNS)) and list(empty.columns) == list(COLUMNS)
    with pytest.raises(ValueError):
        compare_models(y, {"a": as_prob(sa), "b": as_prob(sa)}, BootstrapSpec(n=50), pairs=[("a", "c")])
    with pytest.raises(ValueError):
        compare_models(y, {"a": as_prob(sa), "b": as_prob(sa)[:, :1]}, BootstrapSpec(n=50))
