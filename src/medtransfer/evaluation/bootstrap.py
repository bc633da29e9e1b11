"""Seeded bootstrap CIs; resamples groups (patients, lesions) when the split has them.

Every metric gets the percentile interval except the debiased ECE, whose interval is `ece_interval`:
summarise_draws is the one place that maps resampled values to intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from medtransfer.evaluation.metrics import compute_metrics
from medtransfer.evaluation.resampled import CHUNK, metrics_for_counts


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


def ece_interval(value: float, draws: np.ndarray, level: float) -> tuple[float, float]:
    """Interval for the debiased ECE: basic interval about the draws' median, widened below by their upward offset.

    With q_lo, m, q_hi the (1-level)/2, 0.5 and (1+level)/2 percentiles of the finite draws and d = max(m - value, 0):
    [value - (q_hi - m) - d, value + (m - q_lo)], cut to [0, 1]. Resampled debiased ECEs centre on the sample's
    plug-in ECE, not on `value`, hence the reflection about m. Where bins' true gaps are near 0 the estimator keeps
    an upward bias that the bootstrap does not reproduce; d (about the estimated bias) is the margin for it below,
    and vanishes when every bin's gap is far from 0. Always contains `value`.
    """
    finite = draws[np.isfinite(draws)]
    if not len(finite) or not np.isfinite(value):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, mid, high = np.quantile(finite, [alpha, 0.5, 1 - alpha])
    lower = value - (high - mid) - max(mid - value, 0.0)
    upper = value + (mid - low)
    return float(np.clip(lower, 0.0, 1.0)), float(np.clip(upper, 0.0, 1.0))


def draw_metrics(y: np.ndarray, probs: Sequence[np.ndarray], spec: BootstrapSpec, groups: np.ndarray | None = None,
                 progress: Callable[[int], None] | None = None, *, thresholds: Sequence[float | None] | None = None,
                 ordinal: bool = False, names: Collection[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Every metric (or only `names`) of each model on the same spec.n seeded resamples: each block of counts drawn
    once, used by all.

    One model gives its bootstrap CI; several give paired differences on identical resamples. thresholds: one per
    model (None: argmax), as compute_metrics' threshold.
    """
    if thresholds is None:
        thresholds = [None] * len(probs)
    if len(thresholds) != len(probs):
        raise ValueError(f"need one threshold per model, got {len(thresholds)} for {len(probs)} models")
    rng = np.random.default_rng(spec.seed)
    blocks: list[list[dict[str, np.ndarray]]] = [[] for _ in probs]
    for start in range(0, spec.n, CHUNK):
        counts = resample_counts(len(y), groups, min(CHUNK, spec.n - start), rng)
        for model_blocks, prob, threshold in zip(blocks, probs, thresholds):
            model_blocks.append(metrics_for_counts(y, prob, counts, threshold=threshold, ordinal=ordinal,
                                                   names=names))
        if progress:
            progress(len(counts))
    return [{name: np.concatenate([b[name] for b in model_blocks]) for name in model_blocks[0]}
            for model_blocks in blocks]


def bootstrap_ci(
    y: np.ndarray,
    prob: np.ndarray,
    spec: BootstrapSpec,
    groups: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    threshold: float | None = None,
    ordinal: bool = False,
) -> dict[str, dict[str, float]]:
    """{metric: {value, low, high}}: the value on the whole split, the interval of summarise_draws."""
    point = compute_metrics(y, prob, threshold=threshold, ordinal=ordinal)
    draws = draw_metrics(y, [prob], spec, groups, progress, thresholds=[threshold], ordinal=ordinal)[0]
    return summarise_draws(point, draws, spec.level)


def summarise_draws(point: dict[str, float], draws: dict[str, np.ndarray], level: float) -> dict[str, dict[str, float]]:
    """{metric: {value, low, high}} from point values and their resampled values: percentile, ece by ece_interval."""
    out = {}
    for name, value in point.items():
        draw = np.asarray(draws[name], dtype=float)
        low, high = ece_interval(value, draw, level) if name == "ece" else percentile_interval(draw, level)
        out[name] = {"value": value, "low": low, "high": high}
    return out
