"""The setup comparison: paired bootstrap differences, and the table of pairs with their tests and Holm."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from evaluation.paired_samples import as_prob, binormal_pair, clustered_null
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from medtransfer.evaluation.bootstrap import BootstrapSpec, bootstrap_ci, percentile_interval, resample_counts
from medtransfer.evaluation.metrics import auroc, compute_metrics
from medtransfer.evaluation.paired_tests import (
    clustered_auroc_test,
    clustered_mcnemar_test,
    delong_test,
    holm,
    mcnemar_test,
)
from medtransfer.evaluation.setup_comparison import COLUMNS, compare_models, compare_setups, paired_bootstrap_diff


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
