"""The clustered tests (Obuchowski, Durkalski) with several images per patient: level, references, edge cases."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from evaluation.paired_samples import as_prob, binormal_pair, clustered_null
from scipy.stats import chi2, norm
from sklearn.metrics import roc_auc_score

from medtransfer.evaluation.bootstrap import BootstrapSpec, draw_metrics
from medtransfer.evaluation.metrics import auroc
from medtransfer.evaluation.paired_tests import clustered_auroc_test, clustered_mcnemar_test, delong_test, mcnemar_test


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
