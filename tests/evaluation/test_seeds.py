"""combined_ci: one interval over test patients and training seeds; coverage checked in a seeded simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats
from threadpoolctl import threadpool_limits

from medtransfer.evaluation import seeds
from medtransfer.evaluation.bootstrap import BootstrapSpec, draw_metrics, resample_counts, summarise_draws
from medtransfer.evaluation.metrics import compute_metrics, metric_range
from medtransfer.evaluation.seeds import combine_seeds, combined_ci, interval_label, seed_sd
from medtransfer.evaluation.weighted import binary_auroc

# --- the generative model ---------------------------------------------------------------------------------------
# Patients have a label (prevalence PI) and 1-3 images. An image's signal is MU * label + patient effect + image
# noise (variance 1, a share TAU2 of it shared by the patient's images). Training seed s gives a model whose score
# adds U @ w_s (two nuisance features with seed-specific weights: seeds differ in population quality), seed-specific
# per-image noise CHURN (seeds err on different images at equal quality), and thresholds at MU/2 + a seed offset.
MU, PI, TAU2 = 1.5, 0.4, 0.5
NUISANCE_SD, THRESHOLD_SD, CHURN = 0.3, 0.07, 0.3
N_PATIENTS, REPS, N_BOOT, MAX_SEEDS = 150, 1500, 400, 5  # 1500 reps: binomial SD of a 95% coverage is 0.56 points
METRICS = ("auroc", "accuracy")
LOW, HIGH = 0.93, 0.97


def population(w2: np.ndarray, threshold: np.ndarray) -> dict[str, np.ndarray]:
    """A seed's image-level AUROC and accuracy on the population: scores are N(MU * label, sd^2) given the label."""
    sd = np.sqrt(1 + w2 + CHURN ** 2)
    return {"auroc": stats.norm.cdf(MU / (np.sqrt(2) * sd)),
            "accuracy": PI * stats.norm.cdf((MU - threshold) / sd) + (1 - PI) * stats.norm.cdf(threshold / sd)}


def estimand() -> dict[str, float]:
    """Expected population metric over seeds: |w|^2 is exponential (chi-square 2), the offset integrates in closed form."""
    scale = 2 * NUISANCE_SD ** 2  # mean of |w|^2

    def expect(f):  # E over |w|^2 ~ Exp(mean=scale)
        return integrate.quad(lambda v: f(v) * np.exp(-v / scale) / scale, 0, np.inf)[0]

    def sd(v):
        return np.sqrt(1 + v + CHURN ** 2)

    # E over t ~ N(MU/2, THRESHOLD_SD^2) of Phi((MU - t)/sd) and of Phi(t/sd) are both Phi(MU/2 / sqrt(sd^2 + var_t)).
    return {"auroc": expect(lambda v: stats.norm.cdf(MU / (np.sqrt(2) * sd(v)))),
            "accuracy": expect(lambda v: stats.norm.cdf(MU / 2 / np.sqrt(sd(v) ** 2 + THRESHOLD_SD ** 2)))}


def patients(rng: np.random.Generator, n_patients: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image labels, signal, nuisance features (n, 2) and patient ids of a sample of patients."""
    group = np.repeat(np.arange(n_patients), rng.integers(1, 4, n_patients))
    label = (rng.random(n_patients) < PI)[group].astype(int)
    signal = MU * label + rng.normal(0, np.sqrt(TAU2), n_patients)[group] + rng.normal(0, np.sqrt(1 - TAU2), len(group))
    return label, signal, rng.normal(size=(len(group), 2)), group


def seed_models(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nuisance weights (n, 2) and thresholds (n,) of n training seeds."""
    return rng.normal(0, NUISANCE_SD, (n, 2)), MU / 2 + rng.normal(0, THRESHOLD_SD, n)


def probabilities(rng, signal, nuisance, w, threshold) -> list[np.ndarray]:
    """Each seed's (n, 2) probabilities: the argmax is score > threshold, the ranking is the score's."""
    score = signal[None] + w @ nuisance.T + CHURN * rng.normal(size=(len(w), len(signal)))
    p = 1 / (1 + np.exp(-(score - threshold[:, None])))
    return [np.c_[1 - q, q] for q in p]


# The real engine scores all nine metrics (~20 ms per model here), i.e. minutes over the simulation. The simulation
# swaps in these, which give the same AUROC and accuracy (test_weighted checks the weighted forms against sklearn;
# test_untied_auroc_is_binary_auroc checks the faster one), so it times only what seeds.py adds.
def lean_points(y, prob, **_):
    return {"auroc": float(binary_auroc(y == 1, prob[:, 1], np.ones((1, len(y))))[0]),
            "accuracy": float(np.mean(prob.argmax(axis=1) == y))}


def lean_draws(y, probs, spec, groups=None, **_):
    counts = resample_counts(len(y), groups, spec.n, np.random.default_rng(spec.seed)).astype(float)
    return [lean_on(y, p, counts) for p in probs]


def untied_auroc(positive: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """binary_auroc for scores without ties, in a third of the array passes: credit = weight of negatives below."""
    order = np.argsort(score)
    w, pos = counts[:, order], positive[order]
    below = np.cumsum(w * ~pos, axis=1)
    return (w[:, pos] * below[:, pos]).sum(axis=1) / (w[:, pos].sum(axis=1) * below[:, -1])


def lean_on(y: np.ndarray, prob: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    return {"auroc": untied_auroc(y == 1, prob[:, 1], counts),
            "accuracy": counts @ (prob.argmax(axis=1) == y).astype(counts.dtype) / counts.sum(axis=1)}


class LeanEngine:
    """lean_points and lean_draws scoring each seed once per test set: the 1-, 3- and 5-seed calls share them."""

    def new_test_set(self) -> None:
        self.counts, self.point_memo, self.draw_memo = None, {}, {}  # keyed by id(prob): alive for the repetition

    def points(self, y, prob, **_):
        if id(prob) not in self.point_memo:
            self.point_memo[id(prob)] = lean_points(y, prob)
        return self.point_memo[id(prob)]

    def draws(self, y, probs, spec, groups=None, **_):
        if self.counts is None:  # float32 holds the small integer counts exactly and halves the memory traffic
            rng = np.random.default_rng(spec.seed)
            self.counts = resample_counts(len(y), groups, spec.n, rng).astype(np.float32)
        for p in probs:
            if id(p) not in self.draw_memo:
                self.draw_memo[id(p)] = lean_on(y, p, self.counts)
        return [self.draw_memo[id(p)] for p in probs]


def old_t_interval(values: np.ndarray) -> tuple[float, float]:
    """What the report showed: Student-t over the seeds' point values, cut to [0, 1]."""
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return max(values.mean() - half, 0.0), min(values.mean() + half, 1.0)


@pytest.fixture(scope="module")
def simulation() -> dict:
    """Coverage over REPS test sets of N_PATIENTS patients, each scored by MAX_SEEDS fresh seeds."""
    theta = estimand()
    rng = np.random.default_rng(20240601)
    hits: dict[tuple, list[bool]] = {}
    spread = {m: [] for m in METRICS}  # test-set error of one seed, to report the seed/test SD ratio
    # One BLAS thread: the arrays are small, and threads only fight over the shared cores.
    with pytest.MonkeyPatch.context() as mp, threadpool_limits(1):
        engine = LeanEngine()
        mp.setattr(seeds, "compute_metrics", engine.points)
        mp.setattr(seeds, "draw_metrics", engine.draws)
        for rep in range(REPS):
            engine.new_test_set()
            y, signal, nuisance, group = patients(rng, N_PATIENTS)
            w, threshold = seed_models(rng, MAX_SEEDS)
            probs = probabilities(rng, signal, nuisance, w, threshold)
            own = population((w ** 2).sum(axis=1), threshold)
            for n_seeds in (1, 3, 5):
                ci = combined_ci(y, probs[:n_seeds], BootstrapSpec(N_BOOT, 0.95, rep), group)
                for m in METRICS:
                    low, high = ci[m]["low"], ci[m]["high"]
                    if n_seeds == 1:  # one seed: its interval is about its own model (see test below)
                        hits.setdefault((m, 1, "own"), []).append(low <= own[m][0] <= high)
                        spread[m].append(ci[m]["value"] - own[m][0])
                    hits.setdefault((m, n_seeds, "combined"), []).append(low <= theta[m] <= high)
                    if n_seeds > 1:
                        low, high = old_t_interval(np.array([engine.points(y, p)[m] for p in probs[:n_seeds]]))
                        hits.setdefault((m, n_seeds, "t"), []).append(low <= theta[m] <= high)
    w, threshold = seed_models(np.random.default_rng(1), 200_000)
    seed_spread = {m: float(v.std()) for m, v in population((w ** 2).sum(axis=1), threshold).items()}
    out = {"coverage": {k: float(np.mean(v)) for k, v in hits.items()}, "theta": theta,
           "seed_sd": seed_spread, "test_sd": {m: float(np.std(v)) for m, v in spread.items()}}
    print(f"\n{REPS} test sets of {N_PATIENTS} patients, {N_BOOT} resamples; seed SD / test SD:",
          {m: round(seed_spread[m] / out["test_sd"][m], 2) for m in METRICS})
    for key, value in sorted(out["coverage"].items()):  # pytest -s shows the figures quoted in docs/methods.md
        print(*key, f"{100 * value:.1f}%")
    return out


def test_the_design_has_seed_variation_about_half_the_test_noise(simulation):
    for m in METRICS:
        ratio = simulation["seed_sd"][m] / simulation["test_sd"][m]
        assert 0.35 < ratio < 0.7, (m, ratio)


@pytest.mark.parametrize("n_seeds", [3, 5])
@pytest.mark.parametrize("metric", METRICS)
def test_combined_interval_covers_the_expected_metric_over_seeds(simulation, metric, n_seeds):
    coverage = simulation["coverage"][(metric, n_seeds, "combined")]
    assert LOW <= coverage <= HIGH, (metric, n_seeds, coverage)


@pytest.mark.parametrize("metric", METRICS)
def test_one_seed_interval_covers_its_own_model(simulation, metric):
    """One seed says nothing about seed variation: its interval is the run's bootstrap, for that model's metric."""
    coverage = simulation["coverage"][(metric, 1, "own")]
    assert LOW <= coverage <= HIGH, (metric, coverage)
    # ... and against the mean over seeds it must fall short: the seed variance is invisible in one run.
    assert simulation["coverage"][(metric, 1, "combined")] < LOW


@pytest.mark.parametrize("n_seeds", [3, 5])
@pytest.mark.parametrize("metric", METRICS)
def test_old_t_interval_over_seeds_under_covers(simulation, metric, n_seeds):
    old = simulation["coverage"][(metric, n_seeds, "t")]
    assert old < 0.88 and old < simulation["coverage"][(metric, n_seeds, "combined")] - 0.08, (metric, n_seeds, old)


def test_population_formulas_match_a_large_sample():
    rng = np.random.default_rng(3)
    y, signal, nuisance, _ = patients(rng, 150_000)
    w, threshold = np.array([[0.4, -0.2]]), np.array([MU / 2 + 0.1])
    prob = probabilities(rng, signal, nuisance, w, threshold)[0]
    truth = population((w ** 2).sum(axis=1), threshold)
    for m, value in lean_points(y, prob).items():
        assert value == pytest.approx(truth[m][0], abs=4e-3), m


def test_untied_auroc_is_binary_auroc():
    rng = np.random.default_rng(5)
    y, signal, _, group = patients(rng, 60)
    counts = resample_counts(len(y), group, 50, rng)
    expected = binary_auroc(y == 1, signal, counts.astype(float))
    np.testing.assert_allclose(untied_auroc(y == 1, signal, counts.astype(np.float32)), expected, rtol=1e-6)


def test_estimand_matches_monte_carlo_over_seeds():
    w, threshold = seed_models(np.random.default_rng(4), 400_000)
    mc = population((w ** 2).sum(axis=1), threshold)
    for m, value in estimand().items():
        assert value == pytest.approx(float(mc[m].mean()), abs=2e-4), m


# --- behaviour on the real metric engine ------------------------------------------------------------------------
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
