"""From the internal test split to an external set: the external set's own bootstrap stream and the gap's interval.

The gap is internal minus external, conditional on the trained models (as compare_setups is): the two sets are
independent samples of patients, so each is resampled on its own stream and the difference taken per resample.
docs/methods.md ("External test sets and subgroups") has the coverage.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from medtransfer.evaluation.bootstrap import BootstrapSpec, draw_metrics, percentile_interval
from medtransfer.evaluation.metric_registry import METRIC_REGISTRY
from medtransfer.evaluation.metrics import compute_metrics
from medtransfer.evaluation.seeds import UNITS

EXTERNAL_STREAM = 2  # seeds.SEED_STREAM is 1: a spawn key of its own keeps the external draws apart from both
GAP_INTERVAL = ("{level:g}% CI, internal test and external set bootstrapped independently ({n_resamples} "
                "resamples each, over internal test {unit_int} and external {unit_ext}), {seeds}, seed mean "
                "inside each resample; percentile interval, conditional on the trained models")


@dataclass(frozen=True, eq=False)  # arrays: == between two sets would be elementwise, so identity it is
class ScoredSet:
    """One evaluated set: labels, each seed's (n, K) probabilities, groups (or None), each seed's binary threshold."""

    name: str
    y: np.ndarray
    probs: list[np.ndarray]
    groups: np.ndarray | None = None
    thresholds: list[float | None] | None = None

    def __post_init__(self) -> None:
        n = len(self.y) if np.ndim(self.y) == 1 else -1
        shapes = {np.shape(p) for p in self.probs}
        if n < 0 or not self.probs or len(shapes) > 1 or any(len(s) != 2 or s[0] != n for s in shapes):
            raise ValueError(f"{self.name}: need y (n,) and one (n, K) probability array per seed, all of one shape; "
                             f"got y {np.shape(self.y)} and {sorted(shapes)}")
        if self.groups is not None and np.shape(self.groups) != (n,):
            raise ValueError(f"{self.name}: need one group per sample, got groups {np.shape(self.groups)} for {n}")
        if self.thresholds is not None and len(self.thresholds) != len(self.probs):
            raise ValueError(f"{self.name}: thresholds: one per seed, got {len(self.thresholds)} for "
                             f"{len(self.probs)} seeds")

    @property
    def seed_thresholds(self) -> list[float | None]:
        """Each seed's threshold, None (argmax) where none was given."""
        return list(self.thresholds) if self.thresholds is not None else [None] * len(self.probs)

    @property
    def unit(self) -> str:
        """The bootstrap unit as metrics.json records it: 'group' when the set has groups, else 'sample'."""
        return "sample" if self.groups is None else "group"


def external_spec(spec: BootstrapSpec, name: str) -> BootstrapSpec:
    """The external set's own bootstrap: spec's n and level, a seed derived from (spec.seed, name)."""
    # A hash, not Python's salted hash(): the same name gives the same seed in every process.
    word = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    seed = np.random.SeedSequence([spec.seed, EXTERNAL_STREAM, word]).generate_state(1, np.uint64)[0]
    return BootstrapSpec(n=spec.n, level=spec.level, seed=int(seed))


def lacks_a_class(y: np.ndarray, n_classes: int) -> bool:
    """Whether some class of 0..n_classes-1 has no sample in `y`."""
    return bool((np.bincount(np.asarray(y, dtype=int), minlength=n_classes)[:n_classes] == 0).any())


def without_every_class(intervals: dict[str, dict], incomplete: bool) -> dict[str, dict]:
    """`intervals` ({metric: {value, low, high, ...}}) with the metrics that need every class (metric_registry's
    every_class) set to NaN when the set is `incomplete`: their value there would look like a real one."""
    if not incomplete:
        return intervals
    nan = {"value": math.nan, "low": math.nan, "high": math.nan}
    return {name: entry | nan if name in METRIC_REGISTRY and METRIC_REGISTRY.get(name).every_class else entry
            for name, entry in intervals.items()}


def seed_mean_points(scored: ScoredSet, *, ordinal: bool = False) -> dict[str, float]:
    """Each metric's mean over seeds of its whole-set value (NaN where any seed's is undefined)."""
    points = [compute_metrics(scored.y, p, threshold=t, ordinal=ordinal)
              for p, t in zip(scored.probs, scored.seed_thresholds)]
    return {name: float(np.mean([pt[name] for pt in points])) for name in points[0]}


def seed_mean_draws(scored: ScoredSet, spec: BootstrapSpec, *, ordinal: bool = False,
                    names: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """Each metric's mean over seeds on each of spec.n resamples of the set (groups whole), as draw_metrics draws."""
    draws = draw_metrics(scored.y, scored.probs, spec, scored.groups, thresholds=scored.seed_thresholds,
                         ordinal=ordinal, names=names)
    return {name: np.mean([d[name] for d in draws], axis=0) for name in draws[0]}


def gap_ci(internal: ScoredSet, external: ScoredSet, spec: BootstrapSpec, *, ordinal: bool = False,
           names: Collection[str] | None = None) -> dict[str, dict[str, float]]:
    """{metric: {value, low, high}} of internal minus external seed-mean metric: independent bootstraps, percentile."""
    if len(internal.probs) != len(external.probs):
        raise ValueError(f"the gap needs the same seeds on both sets, got {len(internal.probs)} on {internal.name} "
                         f"and {len(external.probs)} on {external.name}")
    k_int, k_ext = internal.probs[0].shape[1], external.probs[0].shape[1]
    if k_int != k_ext:
        raise ValueError(f"the gap needs the same classes on both sets, got {k_int} and {k_ext} probability columns")
    if spec.n < 1:
        raise ValueError(f"need at least one resample, got {spec.n}")
    point_int, point_ext = seed_mean_points(internal, ordinal=ordinal), seed_mean_points(external, ordinal=ordinal)
    unknown = sorted(set(names or ()) - set(point_int))
    if unknown:
        raise ValueError(f"unknown metrics {unknown} for this task; known: {sorted(point_int)}")
    draws_int = seed_mean_draws(internal, spec, ordinal=ordinal, names=names)  # the internal CI's own resamples
    draws_ext = seed_mean_draws(external, external_spec(spec, external.name), ordinal=ordinal, names=names)
    out = {}
    for name in (m for m in point_int if m in draws_int and m in draws_ext):
        # a resample where either side is undefined is NaN here, and percentile_interval leaves it out
        low, high = percentile_interval(draws_int[name] - draws_ext[name], spec.level)
        out[name] = {"value": point_int[name] - point_ext[name], "low": low, "high": high}
    k = internal.probs[0].shape[1]
    return without_every_class(out, lacks_a_class(internal.y, k) or lacks_a_class(external.y, k))


def gap_label(n_seeds: int, unit_int: str, unit_ext: str, n_resamples: int, *, level: float = 0.95) -> str:
    """Caption of a gap_ci interval; units as metrics.json records them ('group' or 'sample')."""
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be at least 1, got {n_seeds}")
    seeds = f"{n_seeds} seed" + ("s" if n_seeds > 1 else "")
    return GAP_INTERVAL.format(level=100 * level, n_resamples=n_resamples, unit_int=UNITS.get(unit_int, unit_int),
                               unit_ext=UNITS.get(unit_ext, unit_ext), seeds=seeds)

