"""The external set's bootstrap stream and the internal-minus-external gap: exactness, validation, coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from threadpoolctl import threadpool_limits

from medtransfer.evaluation import generalisation
from medtransfer.evaluation.bootstrap import BootstrapSpec, draw_metrics, percentile_interval
from medtransfer.evaluation.generalisation import ScoredSet, external_spec, gap_ci, gap_label, without_every_class
from medtransfer.evaluation.metric_registry import METRIC_REGISTRY
from medtransfer.evaluation.metrics import compute_metrics


def clustered_classifier(rng: np.random.Generator, n_cases: int, accuracy: float, shared: float = 0.5,
                         max_images: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary labels, probabilities and case ids: 1-max_images images per case, each right with probability
    `accuracy`, a share `shared` of the latent error variance common to the case's images."""
    group = np.repeat(np.arange(n_cases), rng.integers(1, max_images + 1, n_cases))
    latent = rng.normal(0, np.sqrt(shared), n_cases)[group] + rng.normal(0, np.sqrt(1 - shared), len(group))
    correct = latent < stats.norm.ppf(accuracy)  # P(correct) = accuracy for every image
    y = rng.integers(0, 2, len(group))
    pred = np.where(correct, y, 1 - y)
    score = np.where(pred == 1, 0.5 + 0.5 * rng.random(len(group)), 0.5 * rng.random(len(group)))
    return y, np.c_[1 - score, score], group


def lean_accuracy(y: np.ndarray, prob: np.ndarray, **_) -> dict[str, float]:
    """compute_metrics' accuracy alone: the simulations need no other metric, and all of them cost ~20 ms a call."""
    return {"accuracy": float(np.mean(prob.argmax(axis=1) == y))}


@pytest.fixture
def sets() -> tuple[ScoredSet, ScoredSet]:
    rng = np.random.default_rng(0)
    y, prob, group = clustered_classifier(rng, 80, 0.85)
    y_ext, prob_ext, _ = clustered_classifier(rng, 120, 0.75, max_images=1)
    return ScoredSet("test", y, [prob], group, [0.4]), ScoredSet("site-b", y_ext, [prob_ext], None, [0.4])


def test_external_spec_is_a_deterministic_stream_of_its_own() -> None:
    spec = BootstrapSpec(n=321, level=0.9, seed=7)
    own = external_spec(spec, "site-b")
    assert own == external_spec(BootstrapSpec(n=321, level=0.9, seed=7), "site-b")
    assert (own.n, own.level) == (321, 0.9)
    assert own.seed != spec.seed
    assert own.seed != external_spec(spec, "site-c").seed
    assert own.seed != external_spec(BootstrapSpec(n=321, level=0.9, seed=8), "site-b").seed
    first = np.random.default_rng(own.seed).random(5)
    assert not np.allclose(first, np.random.default_rng(spec.seed).random(5))


def test_a_set_without_one_class_reports_no_gap_for_the_metrics_that_need_every_class(sets) -> None:
    internal, external = sets
    negatives = external.y == 0  # an external set of negatives only: PPV is 0 and kappa 0 by construction there
    only = ScoredSet("site-b", external.y[negatives], [external.probs[0][negatives]], None, [0.4])
    gap = gap_ci(internal, only, BootstrapSpec(n=200, seed=1))
    needs = {name for name in gap if name in METRIC_REGISTRY and METRIC_REGISTRY.get(name).every_class}
    assert {"auprc", "kappa", "ppv", "npv", "f1_macro", "calibration_slope"} <= needs
    assert all(np.isnan([gap[name]["value"], gap[name]["low"], gap[name]["high"]]).all() for name in needs)
    assert np.isfinite([gap["accuracy"]["low"], gap["specificity"]["high"], gap["brier"]["value"]]).all()
    assert np.isnan([gap["sensitivity"]["value"], gap["auroc"]["value"]]).all()  # undefined on their own
    full = gap_ci(internal, external, BootstrapSpec(n=200, seed=1))
    assert np.isfinite([full[name]["value"] for name in ("auprc", "kappa", "ppv", "f1_macro")]).all()
    entry = {"auroc": {"value": 0.7, "low": 0.6, "high": 0.8, "n": 3}, "accuracy": {"value": 0.9}}
    assert without_every_class(entry, False) is entry
    assert without_every_class(entry, True)["auroc"]["n"] == 3 and without_every_class(entry, True)["accuracy"] == \
        {"value": 0.9}


def test_gap_is_internal_minus_external_on_their_own_resamples(sets) -> None:
    internal, external = sets
    spec = BootstrapSpec(n=300, seed=3)
    gap = gap_ci(internal, external, spec, names=("accuracy", "auroc", "sensitivity"))
    assert set(gap) == {"accuracy", "auroc", "sensitivity"}
    inner = draw_metrics(internal.y, internal.probs, spec, internal.groups, thresholds=[0.4])[0]
    outer = draw_metrics(external.y, external.probs, external_spec(spec, "site-b"), thresholds=[0.4])[0]
    point_int = compute_metrics(internal.y, internal.probs[0], threshold=0.4)
    point_ext = compute_metrics(external.y, external.probs[0], threshold=0.4)
    for name in gap:
        assert gap[name]["value"] == pytest.approx(point_int[name] - point_ext[name])
        low, high = percentile_interval(inner[name] - outer[name], spec.level)
        assert (gap[name]["low"], gap[name]["high"]) == pytest.approx((low, high))


def test_every_metric_by_default_and_the_threshold_applies(sets) -> None:
    internal, external = sets
    spec = BootstrapSpec(n=100, seed=0)
    gap = gap_ci(internal, external, spec)
    assert set(gap) == set(compute_metrics(internal.y, internal.probs[0], threshold=0.4))
    argmax = gap_ci(ScoredSet("test", internal.y, internal.probs, internal.groups),
                    ScoredSet("site-b", external.y, external.probs), spec, names=("sensitivity",))
    want = (compute_metrics(internal.y, internal.probs[0])["sensitivity"]
            - compute_metrics(external.y, external.probs[0])["sensitivity"])
    assert argmax["sensitivity"]["value"] == pytest.approx(want)
    assert argmax["sensitivity"]["value"] != gap["sensitivity"]["value"]


def test_several_seeds_take_the_seed_mean_inside_each_resample() -> None:
    rng = np.random.default_rng(1)
    y, prob_a, group = clustered_classifier(rng, 60, 0.8)
    prob_b = np.clip(prob_a + rng.normal(0, 0.2, prob_a.shape), 0.01, None)
    prob_b /= prob_b.sum(axis=1, keepdims=True)
    y_ext, ext_a, _ = clustered_classifier(rng, 90, 0.7, max_images=1)
    ext_b = ext_a[:, ::-1].copy()
    spec = BootstrapSpec(n=200, seed=5)
    gap = gap_ci(ScoredSet("test", y, [prob_a, prob_b], group), ScoredSet("x", y_ext, [ext_a, ext_b]), spec,
                 names=("accuracy",))["accuracy"]
    inner = draw_metrics(y, [prob_a, prob_b], spec, group, names=("accuracy",))
    outer = draw_metrics(y_ext, [ext_a, ext_b], external_spec(spec, "x"), names=("accuracy",))
    diff = (inner[0]["accuracy"] + inner[1]["accuracy"]) / 2 - (outer[0]["accuracy"] + outer[1]["accuracy"]) / 2
    assert (gap["low"], gap["high"]) == pytest.approx(percentile_interval(diff, 0.95))
    acc = [np.mean(p.argmax(axis=1) == t) for p, t in ((prob_a, y), (prob_b, y), (ext_a, y_ext), (ext_b, y_ext))]
    assert gap["value"] == pytest.approx((acc[0] + acc[1]) / 2 - (acc[2] + acc[3]) / 2)


def test_same_seed_same_gap_different_seed_different(sets) -> None:
    internal, external = sets
    a = gap_ci(internal, external, BootstrapSpec(n=200, seed=11), names=("accuracy", "auroc"))
    assert a == gap_ci(internal, external, BootstrapSpec(n=200, seed=11), names=("accuracy", "auroc"))
    c = gap_ci(internal, external, BootstrapSpec(n=200, seed=12), names=("accuracy", "auroc"))
    assert a["auroc"]["low"] != c["auroc"]["low"] and a["auroc"]["value"] == c["auroc"]["value"]


def test_undefined_external_draws_are_left_out() -> None:
    y_ext = np.array([1, 0, 0, 0, 0, 0, 0, 0])  # a third of the resamples miss the one positive: AUROC NaN there
    p1 = np.array([0.6, 0.1, 0.2, 0.7, 0.3, 0.4, 0.05, 0.15])
    rng = np.random.default_rng(2)
    y, prob, _ = clustered_classifier(rng, 100, 0.8, max_images=1)
    gap = gap_ci(ScoredSet("test", y, [prob]), ScoredSet("x", y_ext, [np.c_[1 - p1, p1]]), BootstrapSpec(n=300),
                 names=("auroc",))["auroc"]
    assert np.isfinite(gap["low"]) and np.isfinite(gap["high"]) and gap["low"] <= gap["value"] <= gap["high"]


@pytest.mark.parametrize("make, message", [
    (lambda y, p: ScoredSet("t", y, [p[:-1]]), "one \\(n, K\\) probability array"),
    (lambda y, p: ScoredSet("t", y, []), "one \\(n, K\\) probability array"),
    (lambda y, p: ScoredSet("t", y, [p, p[:, :1]]), "all of one shape"),
    (lambda y, p: ScoredSet("t", y[:, None], [p]), "need y \\(n,\\)"),
    (lambda y, p: ScoredSet("t", y, [p], np.arange(3)), "one group per sample"),
    (lambda y, p: ScoredSet("t", y, [p], None, [0.5, 0.5]), "one per seed, got 2 for 1"),
])
def test_scored_set_checks_its_shapes(make, message) -> None:
    y = np.array([0, 1, 1, 0])
    with pytest.raises(ValueError, match=message):
        make(y, np.full((4, 2), 0.5))


def test_gap_refuses_mismatched_sets(sets) -> None:
    internal, external = sets
    spec = BootstrapSpec(n=10)
    with pytest.raises(ValueError, match="same seeds on both sets, got 2 on test and 1 on site-b"):
        gap_ci(ScoredSet("test", internal.y, internal.probs * 2), external, spec)
    three = np.full((len(external.y), 3), 1 / 3)
    with pytest.raises(ValueError, match="same classes on both sets, got 2 and 3"):
        gap_ci(internal, ScoredSet("site-b", external.y, [three]), spec)
    with pytest.raises(ValueError, match="unknown metrics \\['acuracy'\\]"):
        gap_ci(internal, external, spec, names=("acuracy",))
    with pytest.raises(ValueError, match="at least one resample"):
        gap_ci(internal, external, BootstrapSpec(n=0))


def test_gap_label_says_what_the_interval_covers() -> None:
    assert gap_label(1, "group", "sample", 2000) == (
        "95% CI, internal test and external set bootstrapped independently (2000 resamples each, over internal test "
        "patients and external images), 1 seed, seed mean inside each resample; percentile interval, conditional on "
        "the trained models")
    assert "3 seeds" in gap_label(3, "sample", "sample", 500, level=0.9)
    assert gap_label(3, "sample", "sample", 500, level=0.9).startswith("90% CI")
    with pytest.raises(ValueError, match="at least 1"):
        gap_label(0, "group", "group", 10)


def test_coverage_of_the_external_gap_interval(monkeypatch) -> None:
    """The gap CI covers the true accuracy difference (0.85 - 0.75) in 93-97% of 1000 simulated studies.

    Internal test: 80 cases of 1-3 images with a shared effect (group bootstrap); external: 120 single images.
    800 resamples per interval, so that the percentiles' own Monte Carlo error is small; binomial SD of a 95% coverage over 1000 reps is 0.69 points. Seeded once.
    """
    monkeypatch.setattr(generalisation, "compute_metrics", lean_accuracy)
    rng = np.random.default_rng(20261203)
    reps, covered = 1000, 0
    with threadpool_limits(1):
        for rep in range(reps):
            y, prob, group = clustered_classifier(rng, 80, 0.85)
            y_ext, prob_ext, _ = clustered_classifier(rng, 120, 0.75, max_images=1)
            gap = gap_ci(ScoredSet("test", y, [prob], group), ScoredSet("ext", y_ext, [prob_ext]),
                         BootstrapSpec(n=800, seed=rep), names=("accuracy",))["accuracy"]
            covered += gap["low"] <= 0.10 <= gap["high"]
    coverage = covered / reps
    print(f"external gap coverage {100 * coverage:.1f}%")
    assert 0.93 <= coverage <= 0.97, coverage
