"""Seeded percentile bootstrap CIs; resamples groups (patients, lesions) when the split has them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medtransfer.evaluation.metrics import compute_metrics
from medtransfer.evaluation.weighted import CHUNK, metrics_for_counts


@dataclass(frozen=True)
class BootstrapSpec:
    """How many resamples, the interval level and the seed."""

    n: int = 2000
    level: float = 0.95
    seed: int = 0


def resample_counts(n_samples: int, groups: np.ndarray | None, n_resamples: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(B, n) draw counts: samples drawn n times with replacement, or groups drawn G times with replacement."""
    if groups is None:
        return rng.multinomial(n_samples, np.full(n_samples, 1.0 / n_samples), size=n_resamples)
    _, group_of = np.unique(groups, return_inverse=True)
    n_groups = group_of.max() + 1
    group_counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_resamples)
    return group_counts[:, group_of]  # every image of a drawn patient comes along, as often as the patient


def percentile_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The (1-level)/2 and (1+level)/2 percentiles of the finite draws (NaN: undefined on that resample)."""
    finite = draws[np.isfinite(draws)]
    if not len(finite):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    y: np.ndarray,
    prob: np.ndarray,
    spec: BootstrapSpec,
    groups: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """{metric: {value, low, high}}: the value on the whole split (sklearn), the percentile interval of resamples."""
    point = compute_metrics(y, prob)
    rng = np.random.default_rng(spec.seed)
    draws: dict[str, list[np.ndarray]] = {name: [] for name in point}
    for start in range(0, spec.n, CHUNK):
        counts = resample_counts(len(y), groups, min(CHUNK, spec.n - start), rng)
        for name, values in metrics_for_counts(y, prob, counts).items():
            draws[name].append(values)
        if progress:
            progress(len(counts))
    out = {}
    for name, value in point.items():
        low, high = percentile_interval(np.concatenate(draws[name]), spec.level)
        out[name] = {"value": value, "low": low, "high": high}
    return out
