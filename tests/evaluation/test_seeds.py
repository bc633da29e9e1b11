"""combined_ci on the real metric engine: one seed is the run's bootstrap, seeds widen it, labels say so."""

from __future__ import annotations

import numpy as np
import pytest
from evaluation.seed_simulation import lean_draws, lean_points, patients, probabilities, seed_models

from medtransfer.evaluation import seeds
from medtransfer.evaluation.bootstrap import BootstrapSpec, draw_metrics, summarise_draws
from medtransfer.evaluation.metric_registry import metric_range
from medtransfer.evaluation.metrics import compute_metrics
from medtransfer.evaluation.seeds import combine_seeds, combined_ci, interval_label, seed_sd


def toy(n_patients: int = 40, n_seeds: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y, signal, nuisance, group = patients(rng, n_patients)
    w, threshold = seed_models(rng, n_seeds)
    return y, probabilities(rng, signal, nuisance, 4 * w, threshold), group


SPEC = BootstrapSpec(200, 0.95, 7)


@pytest.mark.parametrize("grouped", [True, False])
def test_one_seed_is_exactly_the_runs_percentile_bootstrap(grouped):
    y, probs, group = toy(n_seeds=1)
    groups = group if grouped else None
    single = summarise_draws(compute_metrics(y, probs[0]), draw_metrics(y, probs, SPEC, groups)[0], SPEC.level)
    assert combined_ci(y, probs, SPEC, groups) == single


def test_value_is_the_mean_of_the_seeds_whole_set_metrics():
    y, probs, group = toy()
    ci = combined_ci(y, probs, SPEC, group)
    for name, cell in ci.items():
        expected = np.mean([compute_metrics(y, p)[name] for p in probs])
        assert cell["value"] == pytest.approx(expected, abs=1e-12), name
        assert cell["low"] <= cell["high"]


def test_identical_seeds_keep_the_test_set_width():
    """Seeds that agree add nothing, but the test set is still finite: the interval is the one run's bootstrap."""
    y, probs, group = toy(n_seeds=1)
    once = combined_ci(y, probs, SPEC, group)
    thrice = combined_ci(y, probs * 3, SPEC, group)
    for name in ("auroc", "accuracy", "f1_macro"):
        assert thrice[name]["high"] - thrice[name]["low"] > 0.01, name
        for key in ("value", "low", "high"):
            assert thrice[name][key] == pytest.approx(once[name][key], abs=1e-12), (name, key)


def test_seed_spread_widens_the_interval_beyond_the_test_bootstrap():
    y, probs, group = toy(n_patients=80, seed=1)
    wide = combined_ci(y, probs, SPEC, group)
    draws = draw_metrics(y, probs, SPEC, group)
    mean_only = {name: np.mean([d[name] for d in draws], axis=0) for name in draws[0]}
    narrow = summarise_draws({name: 0.0 for name in mean_only}, mean_only, SPEC.level)
    for name in ("accuracy", "auroc"):
        assert wide[name]["high"] - wide[name]["low"] > narrow[name]["high"] - narrow[name]["low"], name


def test_seed_sd_takes_out_what_the_bootstrap_already_holds():
    points = np.array([0.70, 0.72, 0.74])  # between-seed variance 4e-4
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (3, 5000))
    noise = (noise - noise.mean(axis=0)) / noise.std(axis=0, ddof=1)  # every resample: seed variance exactly 1
    assert seed_sd(points, points[:, None] + 0.01 * noise) == pytest.approx(np.sqrt((4e-4 - 1e-4) / 3), rel=1e-9)
    assert seed_sd(points, points[:, None] + 0.05 * noise) == 0.0  # all of the spread is test noise
    assert seed_sd(points, np.tile(points[:, None], 10)) == pytest.approx(0.02 / np.sqrt(3), rel=1e-9)


def test_combined_draws_stay_inside_the_metric_range():
    y = np.tile([0, 1], 30)
    good = np.c_[1 - y * 0.9 - 0.05, y * 0.9 + 0.05]  # separates perfectly
    noisy = np.random.default_rng(2).random(len(y))
    probs = [good, good, np.c_[1 - noisy, noisy]]
    ci = combined_ci(y, probs, SPEC, thresholds=[0.5, 0.6, 0.7])  # seeds' operating points differ too
    for name, entry in ci.items():
        low, high = metric_range(name)
        assert low <= entry["low"] <= entry["high"] <= high, name
    assert {"sensitivity", "ppv", "auprc", "recall_c1"} <= set(ci)


def test_a_seed_undefined_on_the_whole_set_drops_out_of_that_metric():
    points = [{"m": 0.6}, {"m": float("nan")}, {"m": 0.8}]
    draws = [{"m": np.full(SPEC.n, 0.6)}, {"m": np.full(SPEC.n, np.nan)}, {"m": np.full(SPEC.n, 0.8)}]
    cell = combine_seeds(points, draws, SPEC)["m"]
    assert cell["value"] == pytest.approx(0.7)
    assert cell["low"] < 0.7 < cell["high"]
    nothing = combine_seeds(points[1:2] * 2, draws[1:2] * 2, SPEC)["m"]
    assert all(np.isnan(nothing[k]) for k in ("value", "low", "high"))


def test_keywords_pass_on_only_when_used(monkeypatch):
    calls: dict[str, list] = {"point": [], "draw": []}
    monkeypatch.setattr(seeds, "compute_metrics", lambda y, p, **kw: calls["point"].append(kw) or lean_points(y, p))
    monkeypatch.setattr(seeds, "draw_metrics", lambda y, ps, spec, groups=None, **kw:
                        calls["draw"].append(kw) or lean_draws(y, ps, spec, groups))
    y, probs, group = toy(n_seeds=2)
    combined_ci(y, probs, SPEC, group)
    assert calls == {"point": [{}, {}], "draw": [{}]}
    calls = {"point": [], "draw": []}
    combined_ci(y, probs, SPEC, group, thresholds=[0.3, None], ordinal=True)
    assert calls["point"] == [{"ordinal": True, "threshold": 0.3}, {"ordinal": True}]
    assert calls["draw"] == [{"ordinal": True, "thresholds": [0.3, None]}]


def test_bad_inputs_are_refused():
    y, probs, _ = toy(n_seeds=2)
    with pytest.raises(ValueError, match="at least one seed"):
        combined_ci(y, [], SPEC)
    with pytest.raises(ValueError, match="same test samples"):
        combined_ci(y, [probs[0], probs[1][:-1]], SPEC)
    with pytest.raises(ValueError, match="one per seed"):
        combined_ci(y, probs, SPEC, thresholds=[0.5])


def test_interval_labels():
    assert interval_label(3, "patients") == "95% CI, bootstrap over test patients, 3 seeds"
    assert interval_label(1, "images") == "95% CI, bootstrap over test images, 1 seed"
    assert interval_label(3, "patients", n_folds=5) == "95% CI, bootstrap over out-of-fold patients, 5 folds pooled, 3 seeds"
    assert interval_label(1, "group") == "95% CI, bootstrap over test patients, 1 seed"  # metrics.json's unit names
    assert interval_label(2, "sample", n_resamples=2000) == "95% CI, 2000-resample bootstrap over test images, 2 seeds"
    assert interval_label(5, "lesions", level=0.9) == "90% CI, bootstrap over test lesions, 5 seeds"
    for bad in ({"n_seeds": 0, "unit": "patients"}, {"n_seeds": 2, "unit": "patients", "n_folds": 1}):
        with pytest.raises(ValueError):
            interval_label(**bad)
