"""One interval for a setup trained with several seeds: test-set bootstrap combined with the variation between seeds."""

# The estimand is the setup's expected metric over training seeds, on the population. The test set is one sample
# of patients shared by all seeds, so its noise is common to them and does not average out over seeds: a t-interval
# over the seeds' point values misses it (and is zero-width when seeds agree). Here the test noise of the seed mean
# comes from resampling test patients (or images) once for all seeds, and the seed term from the between-seed
# spread less the part of it the bootstrap already holds. docs/methods.md has the reasoning and the coverage.

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medtransfer.evaluation.bootstrap import BootstrapSpec, draw_metrics, summarise_draws
from medtransfer.evaluation.metric_registry import metric_range
from medtransfer.evaluation.metrics import compute_metrics

SEED_STREAM = 1  # the seed-term draws get their own stream, so the test resamples equal draw_metrics' alone
UNITS = {"group": "patients", "sample": "images"}  # a run's recorded bootstrap unit, as a caption says it


def seed_sd(points: np.ndarray, draws: np.ndarray) -> float:
    """Standard error of the seed mean due to seeds alone: sqrt(max(between - within, 0) / S)."""
    # The spread of the seeds' point values holds the seed variance plus each seed's own test-set noise (seeds err
    # on different samples). The bootstrap of the seed mean already carries that noise; it shows as the spread
    # between seeds of their deviations on one resample, so it is taken out here rather than counted twice.
    between = float(np.var(points, ddof=1))
    deviation = draws - points[:, None]
    defined = np.isfinite(deviation).all(axis=0)
    within = float(np.var(deviation[:, defined], axis=0, ddof=1).mean()) if defined.any() else 0.0
    return float(np.sqrt(max(between - within, 0.0) / len(points)))


def seed_t(n_seeds: int, spec: BootstrapSpec) -> np.ndarray:
    """spec.n seeded Student-t draws with n_seeds - 1 df, the same for every metric with that many seeds."""
    # t, not normal: the seed variance is estimated from S seeds, as in a t-interval over seeds.
    return np.random.default_rng([spec.seed, SEED_STREAM, n_seeds]).standard_t(n_seeds - 1, size=spec.n)


def combine_seeds(points: Sequence[dict[str, float]], draws: Sequence[dict[str, np.ndarray]],
                  spec: BootstrapSpec) -> dict[str, dict[str, float]]:
    """{metric: {value, low, high}} from each seed's point values and its draws on the same resamples."""
    if len(points) == 1:  # one seed: exactly that run's percentile bootstrap
        return summarise_draws(points[0], draws[0], spec.level)
    value, combined = {}, {}
    for name in points[0]:
        p = np.array([pt[name] for pt in points], dtype=float)
        d = np.stack([np.asarray(dr[name], dtype=float) for dr in draws])
        finite = np.isfinite(p)  # a seed whose metric is undefined on the whole split drops out of that metric
        p, d = p[finite], d[finite]
        if not len(p):
            value[name], combined[name] = float("nan"), np.full(spec.n, np.nan)
            continue
        value[name] = float(p.mean())
        # A resample on which any seed's metric is undefined stays NaN: summarise_draws leaves it out.
        mean_draw = d.mean(axis=0)
        combined[name] = mean_draw + seed_sd(p, d) * seed_t(len(p), spec) if len(p) > 1 else mean_draw
        # Cutting the draws to where the metric can lie keeps the coverage: the truth is always inside.
        combined[name] = np.clip(combined[name], *metric_range(name))
    return summarise_draws(value, combined, spec.level)


def combined_ci(y: np.ndarray, probs: Sequence[np.ndarray], spec: BootstrapSpec, groups: np.ndarray | None = None,
                *, thresholds: Sequence[float | None] | None = None,
                ordinal: bool = False) -> dict[str, dict[str, float]]:
    """{metric: {value, low, high}} for S seeds' test probabilities on the same samples: mean and combined CI."""
    if not len(probs):
        raise ValueError("combined_ci needs the test probabilities of at least one seed")
    if any(len(prob) != len(y) for prob in probs):
        raise ValueError("every seed's probabilities must cover the same test samples as y, in the same order")
    if thresholds is not None and len(thresholds) != len(probs):
        raise ValueError(f"thresholds: one per seed, got {len(thresholds)} for {len(probs)} seeds")
    # Keywords only when used, so this works with metric functions that predate them.
    shared = {"ordinal": True} if ordinal else {}
    per_seed = list(thresholds) if thresholds is not None else [None] * len(probs)
    points = [compute_metrics(y, prob, **shared, **({} if thr is None else {"threshold": thr}))
              for prob, thr in zip(probs, per_seed)]
    draw_kw = shared | ({} if thresholds is None else {"thresholds": list(thresholds)})
    draws = draw_metrics(y, list(probs), spec, groups, **draw_kw)
    return combine_seeds(points, draws, spec)


def interval_label(n_seeds: int, unit: str, n_folds: int = 0, n_resamples: int | None = None, *,
                   level: float = 0.95, replicate: str = "seed") -> str:
    """Caption of a combined_ci interval, e.g. '95% CI, bootstrap over test patients, 3 seeds'."""
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be at least 1, got {n_seeds}")
    if n_folds < 0 or n_folds == 1:
        raise ValueError(f"n_folds is 0 (a test split) or the number of folds (2 or more), got {n_folds}")
    noun = UNITS.get(unit, unit)
    where = f"out-of-fold {noun}, {n_folds} folds pooled" if n_folds else f"test {noun}"
    method = "bootstrap" if n_resamples is None else f"{n_resamples}-resample bootstrap"
    seeds = f"{n_seeds} {replicate}" + ("s" if n_seeds > 1 else "")  # a replicate: a seed, or a fold's model
    return f"{100 * level:g}% CI, {method} over {where}, {seeds}"
