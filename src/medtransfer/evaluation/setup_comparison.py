"""The comparison table of setups scored on the same samples: paired bootstrap intervals, p-values, Holm.

- `compare_setups` compares each pair of setups once, on the mean over seeds of each metric: a 95% paired
  bootstrap interval (patients resampled whole when `groups` is given, the seed mean taken inside each resample)
  and one p-value per metric, Holm-corrected across the pairs of the call.
- The bootstrap intervals resample patients whole and need no normal or chi-square approximation, but are
  percentile intervals of a seed-mean difference, conditioned on the trained models as the tests are.

The tests themselves (Obuchowski, Durkalski, DeLong, McNemar, Holm) are in paired_tests.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medtransfer.evaluation.bootstrap import BootstrapSpec, draw_metrics, percentile_interval
from medtransfer.evaluation.metric_registry import METRICS
from medtransfer.evaluation.metrics import auroc, compute_metrics
from medtransfer.evaluation.paired_tests import (
    cluster_index,
    clustered_auroc_test,
    clustered_mcnemar_test,
    holm,
    mcnemar_test,
    seed_stack,
)


def _check_probs(y: np.ndarray, probs: Sequence[np.ndarray]) -> None:
    shapes = {np.shape(p) for p in probs}
    n = len(y) if np.ndim(y) == 1 else -1
    if np.ndim(y) != 1 or any(len(s) != 2 or s[0] != n for s in shapes) or len(shapes) > 1:
        raise ValueError(f"need y (n,) and every prob (n, K) of one shape, got y {np.shape(y)} and {sorted(shapes)}")


def _accuracy_test(y: np.ndarray, pa: np.ndarray, pb: np.ndarray, groups: np.ndarray | None) -> tuple[float, str]:
    correct_a, correct_b = pa.argmax(axis=2) == y, pb.argmax(axis=2) == y
    if groups is None and len(pa) == len(pb) == 1:
        return mcnemar_test(correct_a[0], correct_b[0])["p"], "McNemar exact"
    name = "McNemar chi-square" if groups is None else "clustered McNemar (Durkalski)"
    return clustered_mcnemar_test(correct_a, correct_b, groups)["p"], name


def _auroc_test(y: np.ndarray, pa: np.ndarray, pb: np.ndarray, groups: np.ndarray | None) -> tuple[float, str]:
    return clustered_auroc_test(y, pa, pb, groups)["p"], "DeLong" if groups is None else "Obuchowski (clustered)"


def _accuracy(y: np.ndarray, prob: np.ndarray) -> float:
    return float(np.mean(prob.argmax(axis=1) == y))


@dataclass(frozen=True)
class PairedMetric:
    """How compare_setups scores and tests one metric: one seed's whole-split value, and the paired test (p, name)."""

    point: Callable[[np.ndarray, np.ndarray], float]
    test: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], tuple[float, str]]


PAIRED_METRICS = {"auroc": PairedMetric(auroc, _auroc_test), "accuracy": PairedMetric(_accuracy, _accuracy_test)}
PAIRED = tuple(PAIRED_METRICS)  # the metrics compare_setups tests, in its columns' order
# Per pair: each metric's seed-mean difference and interval, its p-value and test name, then the Holm-adjusted p.
COLUMNS = ("a", "b", "n_seeds_a", "n_seeds_b",
           *(f"{m}_{key}" for m in PAIRED for key in ("diff", "low", "high")),
           *(f"{m}_{key}" for key in ("p", "test", "p_holm") for m in PAIRED))


def _paired_draws(y: np.ndarray, probs: Sequence[np.ndarray], spec: BootstrapSpec, groups: np.ndarray | None,
                  names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """The named metrics of every model on the same spec.n resamples: each block of counts drawn once, used by all."""
    if spec.n < 1:
        raise ValueError(f"need at least one resample, got {spec.n}")
    if groups is not None and np.shape(groups) != (len(y),):
        raise ValueError(f"need one group per sample, got groups {np.shape(groups)} for {len(y)} samples")
    return draw_metrics(y, probs, spec, groups, names=names)  # the resamples each model's bootstrap_ci used


def _diff_summary(point_a: dict[str, float], point_b: dict[str, float], draws_a: dict[str, np.ndarray],
                  draws_b: dict[str, np.ndarray], metrics: Sequence[str], level: float) -> dict[str, dict[str, float]]:
    out = {}
    for name in metrics:
        # a resample where either model's metric is undefined gives NaN here, which percentile_interval drops
        low, high = percentile_interval(draws_a[name] - draws_b[name], level)
        out[name] = {"value": point_a[name] - point_b[name], "low": low, "high": high}
    return out


def paired_bootstrap_diff(
    y: np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    spec: BootstrapSpec,
    groups: np.ndarray | None = None,
    metrics: Sequence[str] = PAIRED,
) -> dict[str, dict[str, float]]:
    """{metric: {value, low, high}} for metric(a) - metric(b): the whole-split value, a paired percentile interval."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {METRICS}")
    y, prob_a, prob_b = np.asarray(y), np.asarray(prob_a, dtype=float), np.asarray(prob_b, dtype=float)
    _check_probs(y, [prob_a, prob_b])
    draws_a, draws_b = _paired_draws(y, [prob_a, prob_b], spec, groups, metrics)
    return _diff_summary(compute_metrics(y, prob_a), compute_metrics(y, prob_b), draws_a, draws_b, metrics,
                         spec.level)


def compare_setups(
    y: np.ndarray,
    probs: dict[str, Sequence[np.ndarray]],
    spec: BootstrapSpec,
    groups: np.ndarray | None = None,
    pairs: list[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """One row per pair (a, b) (all pairs by default) of seed-mean differences a - b: paired bootstrap CI, p, Holm."""
    pairs = list(itertools.combinations(probs, 2)) if pairs is None else list(pairs)
    unknown = {name for pair in pairs for name in pair} - set(probs)
    if unknown:
        raise ValueError(f"pairs name setups not in probs: {sorted(unknown)}")
    y = np.asarray(y)
    seeds = {name: seed_stack(prob) for name, prob in probs.items()}
    _check_probs(y, [p for s in seeds.values() for p in s])
    cluster_index(groups, len(y))  # validates groups before any work
    used = list(dict.fromkeys(name for pair in pairs for name in pair))
    # one pass of resamples for every seed of every setup used; the seed mean is taken inside each resample
    flat = [p for name in used for p in seeds[name]]
    draws = _paired_draws(y, flat, spec, groups, PAIRED) if used else []
    mean_draws, points, start = {}, {}, 0
    for name in used:
        own = draws[start:start + len(seeds[name])]
        start += len(own)
        mean_draws[name] = {m: np.mean([d[m] for d in own], axis=0) for m in PAIRED}
        points[name] = {m: float(np.mean([entry.point(y, p) for p in seeds[name]]))
                        for m, entry in PAIRED_METRICS.items()}
    rows = []
    for a, b in pairs:
        diff = _diff_summary(points[a], points[b], mean_draws[a], mean_draws[b], PAIRED, spec.level)
        row = {"a": a, "b": b, "n_seeds_a": len(seeds[a]), "n_seeds_b": len(seeds[b]),
               **{f"{name}_{key}": ci[field] for name, ci in diff.items()
                  for key, field in (("diff", "value"), ("low", "low"), ("high", "high"))}}
        for m, entry in PAIRED_METRICS.items():
            row[f"{m}_p"], row[f"{m}_test"] = entry.test(y, seeds[a], seeds[b], groups)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for m in PAIRED:
        frame[f"{m}_p_holm"] = holm(frame[f"{m}_p"].to_numpy(dtype=float))
    return frame


def compare_models(
    y: np.ndarray,
    probs: dict[str, np.ndarray],
    spec: BootstrapSpec,
    groups: np.ndarray | None = None,
    pairs: list[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """compare_setups with one seed per model (one (n, K) array each)."""
    return compare_setups(y, {name: [prob] for name, prob in probs.items()}, spec, groups, pairs)
