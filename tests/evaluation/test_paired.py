"""Paired comparisons: bootstrap differences, DeLong, McNemar, their clustered versions, Holm and the table."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, chi2, norm
from sklearn.metrics import roc_auc_score

from medtransfer.evaluation.bootstrap import (
    BootstrapSpec,
    bootstrap_ci,
    draw_metrics,
    percentile_interval,
    resample_counts,
)
from medtransfer.evaluation.metrics import auroc, compute_metrics
from medtransfer.evaluation.paired import (
    COLUMNS,
    clustered_auroc_test,
    clustered_mcnemar_test,
    compare_models,
    compare_setups,
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


# ---- clustered tests (several images per patient) ----


def clustered_null(rng: np.random.Generator, seeds: tuple[int, int] = (1, 1), n_patients: int = 60,
                   patient_labels: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, patient ids and (S, n, 2) probabilities of two setups with equal population AUROC and accuracy.

    60 patients with 3-8 images each. A score is 1.5 y + u + e + t with a patient effect u ~ N(0, 2/3), an image
    effect e ~ N(0, 1/6) and a seed's own training noise t ~ N(0, 1/6) per image, so a seed's within-class ICC on
    the score scale is 2/3. The two setups' u are correlated 0.5, and so are their e: correlated models, not
    copies. Both
    setups have the same distribution, so every seed of either has the same population AUROC and accuracy
    (threshold at 0.75, from probabilities logistic in the score). Labels are per image, a patient's images
    positive with probability 0.2 or 0.8 (both classes inside many patients: Obuchowski's S11 term matters), or
    with patient_labels one label per patient (every image of a patient alike, the audit's setting).
    """
    sizes = rng.integers(3, 9, n_patients)
    groups = np.repeat(np.arange(n_patients), sizes)
    if patient_labels:
        y = np.repeat(rng.integers(0, 2, n_patients), sizes)
    else:
        y = (rng.random(len(groups)) < np.repeat(rng.choice([0.2, 0.8], n_patients), sizes)).astype(int)

    def correlated(size: int) -> list[np.ndarray]:
        shared = rng.normal(size=size)
        return [math.sqrt(0.5) * (shared + rng.normal(size=size)) for _ in range(2)]

    (ua, ub), (ea, eb) = correlated(n_patients), correlated(len(y))
    probs = []
    for u, e, n_seeds in ((ua, ea, seeds[0]), (ub, eb, seeds[1])):
        score = 1.5 * y + math.sqrt(2 / 3) * u[groups] + math.sqrt(1 / 6) * e
        score = score + math.sqrt(1 / 6) * rng.normal(size=(n_seeds, len(y)))
        p1 = 1 / (1 + np.exp(-(score - 0.75)))
        probs.append(np.stack([1 - p1, p1], axis=2))
    return y, groups, probs[0], probs[1]


@functools.lru_cache(maxsize=None)
def null_rejection_rates(seeds: tuple[int, int], patient_labels: bool, reps: int) -> dict[str, float]:
    """Share of p < 0.05 under clustered_null for the clustered tests and the independent-sample ones (cached)."""
    rejected = dict.fromkeys(("obuchowski", "durkalski", "delong", "mcnemar"), 0)
    for data_seed in np.random.SeedSequence([31, *seeds, patient_labels]).spawn(reps):
        y, groups, pa, pb = clustered_null(np.random.default_rng(data_seed), seeds, patient_labels=patient_labels)
        correct_a, correct_b = pa.argmax(axis=2) == y, pb.argmax(axis=2) == y
        rejected["obuchowski"] += clustered_auroc_test(y, pa, pb, groups)["p"] < 0.05
        rejected["durkalski"] += clustered_mcnemar_test(correct_a, correct_b, groups)["p"] < 0.05
        # the old report's tests: images as independent samples (first seed only, as it tested one seed at a time)
        rejected["delong"] += delong_test(y, pa[0, :, 1], pb[0, :, 1])["p"] < 0.05
        rejected["mcnemar"] += mcnemar_test(correct_a[0], correct_b[0])["p"] < 0.05
    rates = {name: count / reps for name, count in rejected.items()}
    print(seeds, "patient labels" if patient_labels else "image labels", reps, rates)
    return rates


@pytest.mark.parametrize("seeds, patient_labels, reps", [((1, 1), False, 2000), ((1, 1), True, 1000),
                                                          ((3, 2), False, 1000)])
def test_clustered_tests_hold_their_level_under_a_clustered_null(seeds: tuple[int, int], patient_labels: bool,
                                                                 reps: int) -> None:
    """Acceptance criterion: type-I error at alpha 0.05 within 0.03-0.07 with groups given (60 patients, ICC 2/3).

    Monte Carlo SE is 0.005 at 2,000 repetitions, 0.007 at 1,000. Seeds fixed once and never tuned. Measured
    (Obuchowski AUROC test, Durkalski accuracy test): image labels, one seed each, 2,000 reps: 0.0555, 0.0445;
    patient labels, 1,000 reps: 0.052, 0.056; image labels, 3 seeds vs 2, 1,000 reps: 0.053, 0.051.
    compare_setups uses exactly these two functions when groups are given
    (test_compare_setups_uses_the_clustered_tests_with_groups).
    """
    rates = null_rejection_rates(seeds, patient_labels, reps)
    assert 0.03 <= rates["obuchowski"] <= 0.07, rates
    assert 0.03 <= rates["durkalski"] <= 0.07, rates


@pytest.mark.parametrize("patient_labels", [False, True])
def test_independent_sample_tests_are_anti_conservative_with_several_images_per_patient(
        patient_labels: bool) -> None:
    """Why compare_setups no longer uses DeLong and exact McNemar on images: same data, they reject 3-7x too often.

    Images of one patient share the patient effect, so n images carry far less than n samples' information and
    the independent-sample variance is too small. Measured (DeLong, exact McNemar): image labels, 2,000 reps:
    0.1925, 0.1185; patient labels, 1,000 reps: 0.306, 0.222 (the audit: 0.295 and 0.205).
    """
    rates = null_rejection_rates((1, 1), patient_labels, 2000 if not patient_labels else 1000)
    assert rates["delong"] > 0.15 and rates["mcnemar"] > 0.10, rates
    assert rates["delong"] > 2.5 * rates["obuchowski"] and rates["mcnemar"] > 2 * rates["durkalski"], rates


def obuchowski_reference(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray,
                         groups: np.ndarray) -> tuple[float, float]:
    """Obuchowski (1997) written out per cluster: (AUROC a - AUROC b, its standard error).

    For cluster i with m_i positives and n_i negatives, X_i = sum over its positives of V10 (share of all negatives
    beaten, ties 1/2), Y_i = sum over its negatives of V01. With I clusters, I10 (I01) of them holding positives
    (negatives), M = sum m_i, N = sum n_i and A = sum X_i / M:
    S10 = I10 / ((I10 - 1) M) sum (X_i - m_i A)(X'_i - m_i A'), S01 likewise with I01 and N,
    S11 = I / (I - 1) sum (X_i - m_i A)(Y'_i - n_i A'), cov(A, A') = S10 / M + S01 / N + (S11 + S11') / (M N).
    """
    pos, neg = y == 1, y == 0
    ids = list(dict.fromkeys(groups.tolist()))
    m = np.array([np.sum(pos & (groups == g)) for g in ids])
    n = np.array([np.sum(neg & (groups == g)) for g in ids])
    big_m, big_n, n_clusters = m.sum(), n.sum(), len(ids)
    i10, i01 = np.sum(m > 0), np.sum(n > 0)
    comps = []
    for score in (score_a, score_b):
        psi = np.array([[1.0 if xi > zj else 0.5 if xi == zj else 0.0 for zj in score[neg]] for xi in score[pos]])
        v10, v01 = dict(zip(np.flatnonzero(pos), psi.mean(axis=1))), dict(zip(np.flatnonzero(neg), psi.mean(axis=0)))
        x = np.array([sum(v10[j] for j in np.flatnonzero(pos & (groups == g))) for g in ids])
        z = np.array([sum(v01[j] for j in np.flatnonzero(neg & (groups == g))) for g in ids])
        a = psi.mean()
        comps.append((a, x - m * a, z - n * a))

    def cov(r: int, s: int) -> float:
        (_, xr, yr), (_, xs, ys) = comps[r], comps[s]
        s10 = i10 / ((i10 - 1) * big_m) * np.sum(xr * xs)
        s01 = i01 / ((i01 - 1) * big_n) * np.sum(yr * ys)
        s11 = n_clusters / (n_clusters - 1) * (np.sum(xr * ys) + np.sum(xs * yr))
        return s10 / big_m + s01 / big_n + s11 / (big_m * big_n)

    return comps[0][0] - comps[1][0], math.sqrt(cov(0, 0) + cov(1, 1) - 2 * cov(0, 1))


@pytest.mark.parametrize("rounding", [None, 1])
def test_clustered_auroc_matches_obuchowski_written_per_cluster(rounding: int | None) -> None:
    y, groups, pa, pb = clustered_null(np.random.default_rng(41), n_patients=25)
    sa, sb = pa[0, :, 1], pb[0, :, 1] + 0.05 * y  # b a little better
    if rounding is not None:  # ties within and across classes and clusters
        sa, sb = np.round(sa, rounding), np.round(sb, rounding)
    diff, se = obuchowski_reference(y, sa, sb, groups)
    got = clustered_auroc_test(y, np.c_[1 - sa, sa], np.c_[1 - sb, sb], groups=groups.astype(str))
    assert got["diff"] == pytest.approx(diff, rel=1e-10, abs=1e-14)
    assert got["se"] == pytest.approx(se, rel=1e-10)
    assert got["z"] == pytest.approx(diff / se, rel=1e-10)
    assert got["p"] == pytest.approx(2 * norm.sf(abs(diff / se)), rel=1e-9)
    assert got["auc_a"] == pytest.approx(roc_auc_score(y, sa), rel=1e-12)
    assert got["auc_b"] == pytest.approx(roc_auc_score(y, sb), rel=1e-12)


@pytest.mark.parametrize("seed", [16, 17])
def test_clustered_auroc_with_singleton_clusters_is_delong(seed: int) -> None:
    y, sa, sb = binormal_pair(np.random.default_rng(seed), 150, 1.0, 0.7, 0.4)
    sa = np.round(sa, 1)  # with ties
    want = delong_test(y, sa, sb)
    ids = np.random.default_rng(seed).permutation(len(y)) * 7  # any distinct ids, in any order
    for groups in (None, ids):
        got = clustered_auroc_test(y, as_prob(sa), as_prob(sb), groups)
        assert set(got) == set(want)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-10, abs=1e-14), key


def test_duplicated_images_add_nothing_to_the_clustered_tests() -> None:
    """Every image twice in its patient: the clustered tests are unchanged, the independent ones grow overconfident."""
    y, sa, sb = binormal_pair(np.random.default_rng(42), 120, 1.0, 0.7, 0.4)
    prob_a, prob_b = as_prob(sa, 0.5), as_prob(sb, 0.35)
    twice = np.repeat(np.arange(len(y)), 2)
    once = clustered_auroc_test(y, prob_a, prob_b)
    doubled = clustered_auroc_test(y[twice], prob_a[twice], prob_b[twice], groups=twice)
    for key in once:
        assert doubled[key] == pytest.approx(once[key], rel=1e-10), key
    naive = delong_test(y[twice], sa[twice], sb[twice])
    assert naive["se"] == pytest.approx(once["se"] / math.sqrt(2), rel=0.05)  # as if twice the patients
    correct_a, correct_b = prob_a.argmax(axis=1) == y, prob_b.argmax(axis=1) == y
    mc_once = clustered_mcnemar_test(correct_a, correct_b)
    mc_doubled = clustered_mcnemar_test(correct_a[twice], correct_b[twice], groups=twice)
    assert mc_doubled["stat"] == pytest.approx(mc_once["stat"], rel=1e-12)
    assert mc_doubled["p"] == pytest.approx(mc_once["p"], rel=1e-12)
    assert mc_doubled["diff"] == pytest.approx(mc_once["diff"], rel=1e-12)


def test_clustered_auroc_seed_mean_is_linear_in_the_components() -> None:
    """Three seeds: auc is the mean of per-seed AUROCs (not the AUROC of mean probabilities); one seed repeated = it."""
    y, groups, pa, pb = clustered_null(np.random.default_rng(43), seeds=(3, 2))
    got = clustered_auroc_test(y, list(pa), list(pb), groups)
    assert got["auc_a"] == pytest.approx(np.mean([roc_auc_score(y, p[:, 1]) for p in pa]), rel=1e-12)
    assert got["auc_b"] == pytest.approx(np.mean([roc_auc_score(y, p[:, 1]) for p in pb]), rel=1e-12)
    assert got["diff"] == pytest.approx(got["auc_a"] - got["auc_b"], abs=1e-15)
    repeated = clustered_auroc_test(y, [pa[0]] * 3, pb[1], groups)
    single = clustered_auroc_test(y, pa[0], pb[1], groups)
    for key in single:
        assert repeated[key] == pytest.approx(single[key], rel=1e-10), key
    swapped = clustered_auroc_test(y, pb, pa, groups)
    assert swapped["diff"] == pytest.approx(-got["diff"]) and swapped["p"] == pytest.approx(got["p"])


@pytest.mark.parametrize("k", [2, 3])
def test_clustered_auroc_se_agrees_with_the_patient_bootstrap(k: int) -> None:
    """The analytic SE (macro one-vs-rest for K = 3) is within 15% of the SD of the grouped bootstrap differences."""
    rng = np.random.default_rng(44 + k)
    n_patients = 80
    sizes = rng.integers(2, 7, n_patients)
    groups = np.repeat(np.arange(n_patients), sizes)
    y = rng.integers(0, k, n_patients)[groups]  # one label per patient: clustering widens the SE (see below)
    shared = rng.normal(size=(n_patients, k))  # patient effects, partly common to both models
    patient_a, patient_b = ((shared + rng.normal(size=(n_patients, k)))[groups] for _ in range(2))
    logits_a = 1.2 * np.eye(k)[y] + patient_a + rng.normal(size=(len(y), k))
    logits_b = 0.9 * np.eye(k)[y] + patient_b + rng.normal(size=(len(y), k))
    prob_a, prob_b = (np.exp(x) / np.exp(x).sum(axis=1, keepdims=True) for x in (logits_a, logits_b))
    got = clustered_auroc_test(y, prob_a, prob_b, groups)
    assert got["diff"] == pytest.approx(auroc(y, prob_a) - auroc(y, prob_b), rel=1e-10)
    da, db = draw_metrics(y, [prob_a, prob_b], BootstrapSpec(n=1500, seed=1), groups)
    sd = float(np.nanstd(da["auroc"] - db["auroc"], ddof=1))
    assert got["se"] == pytest.approx(sd, rel=0.15), (got["se"], sd)
    # with patient-level labels and effects, images of a patient move together: the independent-sample
    # (singleton cluster) SE is too small. With labels mixed inside patients a shared shift makes S11 negative.
    assert got["se"] > 1.2 * clustered_auroc_test(y, prob_a, prob_b)["se"]


def test_clustered_auroc_undefined_cases() -> None:
    score = np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.6])
    prob = np.c_[1 - score, score]
    out = clustered_auroc_test(np.zeros(6, dtype=int), prob, prob[::-1])
    assert all(math.isnan(v) for v in out.values())
    # all positives in one patient: AUROC defined, its variance not (one cluster of positives)
    out = clustered_auroc_test(np.array([1, 1, 0, 0, 0, 0]), prob, prob[::-1], groups=np.array([0, 0, 1, 1, 2, 2]))
    assert np.isfinite(out["diff"]) and math.isnan(out["se"]) and math.isnan(out["p"])
    same = clustered_auroc_test(np.array([1, 1, 0, 0, 1, 0]), prob, prob.copy(), groups=np.array([0, 0, 1, 1, 2, 2]))
    assert same["diff"] == 0 and same["p"] == 1.0
    with pytest.raises(ValueError):
        clustered_auroc_test(np.array([1, 0, 1]), prob, prob)
    with pytest.raises(ValueError):
        clustered_auroc_test(np.array([1, 0, 1, 0, 1, 0]), prob, prob, groups=np.arange(5))


def test_clustered_mcnemar_hand_built_example() -> None:
    # patient 0: a right on 2 images b misses (d = +2); patient 1: b right on 1 a misses, 1 concordant (d = -1);
    # patient 2: a +1 and b +1 (d = 0); patient 3: d = +3. Sum 4, sum of squares 4 + 1 + 0 + 9 = 14.
    correct_a = np.array([1, 1, 0, 1, 1, 0, 1, 1, 1], dtype=bool)
    correct_b = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    groups = np.array(["p0", "p0", "p1", "p1", "p2", "p2", "p3", "p3", "p3"])
    out = clustered_mcnemar_test(correct_a, correct_b, groups)
    assert out["stat"] == pytest.approx(16 / 14, rel=1e-12)
    assert out["p"] == pytest.approx(chi2.sf(16 / 14, 1), rel=1e-12)
    assert out["diff"] == pytest.approx((7 - 3) / 9, rel=1e-12)
    # singleton clusters: McNemar's chi-square (b10 - b01)^2 / (b10 + b01), here (6 - 2)^2 / 8
    single = clustered_mcnemar_test(correct_a, correct_b)
    assert single["stat"] == pytest.approx(16 / 8, rel=1e-12)
    assert clustered_mcnemar_test(correct_a, correct_a)["p"] == 1.0
    # seed-averaged correctness: 0/1 per seed, fractions after the mean
    two_seeds = clustered_mcnemar_test(np.stack([correct_a, correct_b]), correct_b, groups)
    half = clustered_mcnemar_test(correct_a.astype(float) / 2 + correct_b / 2, correct_b, groups)
    assert two_seeds == pytest.approx(half)
    with pytest.raises(ValueError):
        clustered_mcnemar_test(correct_a, correct_b[:5])
    with pytest.raises(ValueError):
        clustered_mcnemar_test(correct_a, correct_b, groups[:5])


# ---- the comparison table ----


def test_compare_setups_binary_table() -> None:
    rng = np.random.default_rng(19)
    y, sa, sb = binormal_pair(rng, 300, 1.6, 0.6, 0.5)  # true AUROCs 0.871 and 0.664
    probs = {"good": [as_prob(sa, 0.8)], "worse": [as_prob(sb, 0.3)], "copy": [as_prob(sa, 0.8)]}
    spec = BootstrapSpec(n=400, seed=4)
    table = compare_setups(y, probs, spec)
    assert list(table.columns) == list(COLUMNS)
    assert list(zip(table["a"], table["b"])) == [("good", "worse"), ("good", "copy"), ("worse", "copy")]
    assert (table["n_seeds_a"] == 1).all() and (table["n_seeds_b"] == 1).all()
    assert (table["auroc_test"] == "DeLong").all() and (table["accuracy_test"] == "McNemar exact").all()
    same = table.iloc[1]
    for name in ("auroc", "accuracy"):
        assert (same[f"{name}_diff"], same[f"{name}_low"], same[f"{name}_high"]) == (0.0, 0.0, 0.0)
    assert same["auroc_p"] == 1.0 and same["accuracy_p"] == 1.0
    # each row is what the single-pair functions give (same seed, same resamples)
    row = table.iloc[0]
    diff = paired_bootstrap_diff(y, probs["good"][0], probs["worse"][0], spec)
    for name in ("auroc", "accuracy"):
        assert row[f"{name}_diff"] == pytest.approx(diff[name]["value"], abs=1e-12)
        assert row[f"{name}_low"] == pytest.approx(diff[name]["low"], abs=1e-12)
        assert row[f"{name}_high"] == pytest.approx(diff[name]["high"], abs=1e-12)
    assert row["auroc_p"] == pytest.approx(delong_test(y, sa, sb)["p"], rel=1e-10)
    pred_a, pred_b = probs["good"][0].argmax(axis=1), probs["worse"][0].argmax(axis=1)
    assert row["accuracy_p"] == mcnemar_test(pred_a == y, pred_b == y)["p"]
    assert row["auroc_diff"] > 0 and row["auroc_p"] < 0.05
    np.testing.assert_allclose(table["auroc_p_holm"], holm(table["auroc_p"].tolist()))
    np.testing.assert_allclose(table["accuracy_p_holm"], holm(table["accuracy_p"].tolist()))
    assert (table["auroc_p_holm"] >= table["auroc_p"]).all()


def test_compare_setups_uses_the_clustered_tests_with_groups() -> None:
    y, groups, pa, pb = clustered_null(np.random.default_rng(45))
    table = compare_setups(y, {"a": list(pa), "b": list(pb)}, BootstrapSpec(n=100, seed=0), groups=groups)
    row = table.iloc[0]
    assert row["auroc_test"] == "Obuchowski (clustered)"
    assert row["accuracy_test"] == "clustered McNemar (Durkalski)"
    assert row["auroc_p"] == clustered_auroc_test(y, pa, pb, groups)["p"]
    assert row["accuracy_p"] == clustered_mcnemar_test(pa.argmax(axis=2) == y, pb.argmax(axis=2) == y, groups)["p"]
    assert row["auroc_p_holm"] == row["auroc_p"]  # one pair: nothing to correct


def test_compare_setups_three_seeds_each_pair_tested_once() -> None:
    """3 seeds vs 3 (and vs 1): one row per pair; diffs, intervals and p-values all on seed means."""
    rng = np.random.default_rng(46)
    y, groups, pa, pb = clustered_null(rng, seeds=(3, 3), n_patients=20)
    pc = pb[:1] * 0.9 + 0.05  # another setup, one seed, same argmax and ranking as b's first seed
    probs = {"a": list(pa), "b": list(pb), "c": list(pc)}
    spec = BootstrapSpec(n=60, seed=7)  # under one block: resamples are exactly resample_counts(...)
    table = compare_setups(y, probs, spec, groups=groups)
    assert len(table) == 3 and list(zip(table["a"], table["b"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert table[["n_seeds_a", "n_seeds_b"]].to_numpy().tolist() == [[3, 3], [3, 1], [3, 1]]
    mean_auroc = {k: np.mean([roc_auc_score(y, p[:, 1]) for p in v]) for k, v in probs.items()}
    mean_accuracy = {k: np.mean([np.mean(p.argmax(axis=1) == y) for p in v]) for k, v in probs.items()}
    counts = resample_counts(len(y), groups, spec.n, np.random.default_rng(spec.seed))
    resampled = {k: np.array([[auroc(y[idx], p[idx]) for p in v]
                              for idx in (np.repeat(np.arange(len(y)), row) for row in counts)]).mean(axis=1)
                 for k, v in probs.items()}
    for (_, row) in table.iterrows():
        a, b = row["a"], row["b"]
        assert row["auroc_diff"] == pytest.approx(mean_auroc[a] - mean_auroc[b], abs=1e-12)
        assert row["accuracy_diff"] == pytest.approx(mean_accuracy[a] - mean_accuracy[b], abs=1e-12)
        low, high = percentile_interval(resampled[a] - resampled[b], spec.level)
        assert row["auroc_low"] == pytest.approx(low, abs=1e-12) and row["auroc_high"] == pytest.approx(high, abs=1e-12)
        test = clustered_auroc_test(y, probs[a], probs[b], groups)
        assert row["auroc_p"] == test["p"] and test["diff"] == pytest.approx(row["auroc_diff"], abs=1e-12)
        correct = {k: np.stack([p.argmax(axis=1) == y for p in probs[k]]) for k in (a, b)}
        assert row["accuracy_p"] == clustered_mcnemar_test(correct[a], correct[b], groups)["p"]
    np.testing.assert_allclose(table["auroc_p_holm"], holm(table["auroc_p"].tolist()))
    np.testing.assert_allclose(table["accuracy_p_holm"], holm(table["accuracy_p"].tolist()))
    # without groups, several seeds: DeLong on seed means and McNemar's chi-square on mean correctness
    free = compare_setups(y, probs, spec, pairs=[("a", "c")])
    assert (free["auroc_test"].item(), free["accuracy_test"].item()) == ("DeLong", "McNemar chi-square")


def test_compare_setups_multiclass_with_groups_and_chosen_pairs() -> None:
    rng = np.random.default_rng(20)
    n, k = 180, 3
    y = rng.integers(0, k, n)
    probs = {name: [rng.dirichlet(np.ones(k), n) for _ in range(2)] for name in ("x", "y", "z")}
    groups = np.repeat(np.arange(60), 3)
    table = compare_setups(y, probs, BootstrapSpec(n=200, seed=0), groups=groups, pairs=[("z", "x"), ("y", "x")])
    assert table.shape == (2, len(COLUMNS))
    assert list(zip(table["a"], table["b"])) == [("z", "x"), ("y", "x")]
    for column in ("auroc_p", "accuracy_p", "auroc_p_holm", "accuracy_p_holm"):
        assert table[column].between(0, 1).all(), column
    assert np.isfinite(table[["auroc_low", "auroc_high", "accuracy_low", "accuracy_high"]].to_numpy()).all()
    row = table.iloc[0]
    assert row["auroc_p"] == clustered_auroc_test(y, probs["z"], probs["x"], groups)["p"]
    assert row["auroc_diff"] == pytest.approx(np.mean([auroc(y, p) for p in probs["z"]])
                                              - np.mean([auroc(y, p) for p in probs["x"]]), abs=1e-12)


def test_compare_models_is_compare_setups_with_one_seed() -> None:
    y, sa, sb = binormal_pair(np.random.default_rng(47), 120, 1.0, 0.7, 0.4)
    groups = np.repeat(np.arange(40), 3)
    spec = BootstrapSpec(n=100, seed=2)
    old = compare_models(y, {"a": as_prob(sa), "b": as_prob(sb)}, spec, groups)
    new = compare_setups(y, {"a": [as_prob(sa)], "b": [as_prob(sb)]}, spec, groups)
    pd.testing.assert_frame_equal(old, new)


def test_compare_setups_single_setup_and_bad_input() -> None:
    y, sa, _ = binormal_pair(np.random.default_rng(21), 50, 1.0, 1.0, 0.0)
    empty = compare_setups(y, {"only": [as_prob(sa)]}, BootstrapSpec(n=50))
    assert empty.shape == (0, len(COLUMNS)) and list(empty.columns) == list(COLUMNS)
    with pytest.raises(ValueError):
        compare_setups(y, {"a": [as_prob(sa)], "b": [as_prob(sa)]}, BootstrapSpec(n=50), pairs=[("a", "c")])
    with pytest.raises(ValueError):
        compare_setups(y, {"a": [as_prob(sa)], "b": [as_prob(sa)[:, :1]]}, BootstrapSpec(n=50))
    with pytest.raises(ValueError):  # seeds of one setup on different samples
        compare_setups(y, {"a": [as_prob(sa), as_prob(sa)[:40]], "b": [as_prob(sa)]}, BootstrapSpec(n=50))
    with pytest.raises(ValueError):
        compare_setups(y, {"a": [], "b": [as_prob(sa)]}, BootstrapSpec(n=50))
    with pytest.raises(ValueError):
        compare_setups(y, {"a": [as_prob(sa)], "b": [as_prob(sa)]}, BootstrapSpec(n=50), groups=np.arange(49))
