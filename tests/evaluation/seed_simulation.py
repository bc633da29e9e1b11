"""The seeded simulation behind the seed-interval tests: patients, seed models, and a lean metric engine.

Patients have a label (prevalence PI) and 1-3 images. An image's signal is MU * label + patient effect + image
noise (variance 1, a share TAU2 of it shared by the patient's images). Training seed s gives a model whose score
adds U @ w_s (two nuisance features with seed-specific weights: seeds differ in population quality), seed-specific
per-image noise CHURN (seeds err on different images at equal quality), and thresholds at MU/2 + a seed offset.
"""

from __future__ import annotations

import numpy as np
from scipy import integrate, stats

from medtransfer.evaluation.bootstrap import resample_counts
from medtransfer.evaluation.resampled import binary_auroc

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
# swaps in these, which give the same AUROC and accuracy (test_resampled checks the weighted forms against sklearn;
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
