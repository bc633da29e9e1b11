"""Subgroups of a split by one metadata column: per-subgroup metrics, the worst subgroup and the largest gap.

Every bootstrap draw resamples the whole split once (groups whole) and scores each subgroup on its own rows of
that resample, so the subgroups' intervals and the gap's come from the same joint draws, and a case whose images
fall in two subgroups moves with both. Restricting the counts matrix to a subgroup's columns is exact.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
import pandas as pd

from medtransfer.data.subgroup_spec import SubgroupColumn, as_number, edge_text
from medtransfer.evaluation.bootstrap import BootstrapSpec, percentile_interval, resample_counts
from medtransfer.evaluation.generalisation import ScoredSet, without_every_class
from medtransfer.evaluation.metric_registry import METRIC_REGISTRY
from medtransfer.evaluation.metrics import compute_metrics
from medtransfer.evaluation.resampled import CHUNK, metrics_for_counts
from medtransfer.evaluation.seeds import UNITS, combine_seeds

MISSING, OUTSIDE = "missing", "outside bins"


def _blank(values: pd.Series) -> np.ndarray:
    return (values.isna() | values.astype(str).str.strip().eq("")).to_numpy()


def _category(value: object) -> str:
    # a numeric column read as floats (because of blanks) shows 1.0; its categories are the integers written
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def subgroup_labels(values: pd.Series, column: SubgroupColumn) -> np.ndarray:
    """Each row's subgroup label: the category, or the bin 'lo–hi' ([lo, hi), the last bin closed), 'missing',
    'outside bins'."""
    blank = _blank(values)
    labels = np.full(len(values), MISSING, dtype=object)
    if column.edges is None:
        labels[~blank] = [_category(v) for v in values[~blank]]
        return labels
    numbers = np.full(len(values), np.nan)
    numbers[~blank] = pd.to_numeric(values[~blank].astype(str).str.strip(), errors="coerce")
    bad = ~blank & np.isnan(numbers)
    if bad.any():
        examples = sorted(set(values[bad].astype(str)))[:3]
        raise ValueError(f"subgroup column {column.column!r} has bins but non-numeric values, e.g. {examples}")
    edges = np.asarray(column.edges)
    names = np.array([f"{edge_text(lo)}–{edge_text(hi)}" for lo, hi in zip(edges, edges[1:])], dtype=object)
    index = np.minimum(np.searchsorted(edges, numbers, side="right") - 1, len(names) - 1)  # the last edge: last bin
    inside = ~blank & (numbers >= edges[0]) & (numbers <= edges[-1])
    labels[inside] = names[index[inside]]
    labels[~blank & ~inside] = OUTSIDE
    return labels


def _order(label: str) -> tuple:
    """Bins by their lower edge, then categories by name, then 'missing' and 'outside bins'."""
    if label in (MISSING, OUTSIDE):
        return (2, 0.0, label)
    low, dash, _ = label.partition("–")
    start = as_number(low) if dash else None
    return (1, 0.0, label) if start is None else (0, start, label)


def _n_cases(scored: ScoredSet, rows: np.ndarray) -> int:
    return int(rows.sum()) if scored.groups is None else len(np.unique(scored.groups[rows]))


def _joint_draws(scored: ScoredSet, rows: dict[str, np.ndarray], spec: BootstrapSpec, ordinal: bool,
                 names: Collection[str] | None) -> dict[str, list[dict[str, np.ndarray]]]:
    """{subgroup: [each seed's {metric: spec.n draws}]} from spec.n resamples of the whole split, drawn once."""
    rng = np.random.default_rng(spec.seed)  # draw_metrics' stream and blocks: the same resamples as the split's CI
    blocks: dict[str, list[list[dict[str, np.ndarray]]]] = {s: [[] for _ in scored.probs] for s in rows}
    for start in range(0, spec.n, CHUNK):
        counts = resample_counts(len(scored.y), scored.groups, min(CHUNK, spec.n - start), rng)
        for label, mask in rows.items():
            own = counts[:, mask]
            empty = own.sum(axis=1) == 0  # the subgroup drew no case: its metrics are undefined there, not 0
            for seed_blocks, prob, threshold in zip(blocks[label], scored.probs, scored.seed_thresholds):
                draws = metrics_for_counts(scored.y[mask], prob[mask], own, threshold=threshold, ordinal=ordinal,
                                           names=names)
                seed_blocks.append({m: np.where(empty, np.nan, v) for m, v in draws.items()})
    return {label: [{m: np.concatenate([b[m] for b in seed]) for m in seed[0]} for seed in per_seed]
            for label, per_seed in blocks.items()}


def higher_is_better(name: str) -> bool | None:
    """The metric's direction; the per-class recalls recall_c{k}, not in the registry, are better higher."""
    return METRIC_REGISTRY.get(name).higher_is_better if name in METRIC_REGISTRY else True


def _worst(metrics: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict]:
    out = {}
    for name in next(iter(metrics.values())):
        direction = higher_is_better(name)
        values = {s: m[name]["value"] for s, m in metrics.items() if math.isfinite(m[name]["value"])}
        if direction is None or len(values) < 2:
            continue
        label = (min if direction else max)(values, key=values.__getitem__)
        out[name] = {"subgroup": label, **metrics[label][name]}
    return out


def _gap(metrics: dict[str, dict[str, dict[str, float]]], mean_draws: dict[str, dict[str, np.ndarray]],
         level: float) -> dict[str, dict]:
    out = {}
    for name in next(iter(metrics.values())):
        values = {s: m[name]["value"] for s, m in metrics.items() if math.isfinite(m[name]["value"])}
        if len(values) < 2:
            continue
        ranked = sorted(values, key=values.__getitem__)  # stable: with all values equal, still two subgroups
        lowest, highest = ranked[0], ranked[-1]
        low, high = percentile_interval(mean_draws[highest][name] - mean_draws[lowest][name], level)
        out[name] = {"value": values[highest] - values[lowest], "low": low, "high": high,
                     "highest": highest, "lowest": lowest}
    return out


def interval_texts(scored: ScoredSet, n_subgroups: int, level: float,
                   incomplete: Collection[str] = ()) -> tuple[str, str]:
    """The `interval` and `gap_interval` captions of a subgroup block; `incomplete`: the subgroups lacking a class."""
    noun = UNITS[scored.unit]
    n_seeds = len(scored.probs)
    where = f"percentile bootstrap over {scored.name} {noun}, resampled jointly over the whole {scored.name} split"
    seeds = "1 seed" if n_seeds == 1 else f"combined with the variation between {n_seeds} seeds"
    interval = f"{100 * level:g}% CI, {where}, {seeds}"
    if incomplete:
        interval += (f"; {', '.join(incomplete)} lack(s) one of the split's classes: no value there for the metrics "
                     "that need every class (AUPRC, macro F1, kappa, PPV, NPV, calibration slope and intercept)")
    gap = (f"{100 * level:g}% CI of the difference between the two subgroups with the highest and the lowest value, "
           f"the pair chosen once on the point values; {where}, {n_seeds} seed" + ("s" if n_seeds > 1 else "")
           + (", seed mean inside each resample" if n_seeds > 1 else "") + ", conditional on the trained models")
    if n_subgroups > 2:
        gap += (f"; with {n_subgroups} subgroups, choosing the pair on the data biases the gap away from 0, so an "
                "interval near 0 is no evidence of a real gap")
    return interval, gap


def subgroup_analysis(scored: ScoredSet, labels: np.ndarray, spec: BootstrapSpec, min_cases: int, *,
                      ordinal: bool = False, names: Collection[str] | None = None) -> dict:
    """One column's metrics.json block (without bins/split): subgroups, too_few, worst, gap, and their captions."""
    labels = np.asarray(labels).astype(str).astype(object)  # labels are metrics.json keys: text
    if labels.shape != np.shape(scored.y):
        raise ValueError(f"need one subgroup label per sample, got {labels.shape} for {len(scored.y)} samples")
    if spec.n < 1:
        raise ValueError(f"need at least one resample, got {spec.n}")
    rows = {label: labels == label for label in sorted(set(labels), key=_order)}
    cases = {label: _n_cases(scored, mask) for label, mask in rows.items()}
    kept = {label: mask for label, mask in rows.items() if cases[label] >= min_cases}
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    mean_draws: dict[str, dict[str, np.ndarray]] = {}
    # a subgroup without one of the split's classes has no macro F1, kappa or PPV worth comparing
    incomplete = [label for label, mask in kept.items() if not set(scored.y) <= set(scored.y[mask])]
    if kept:
        draws = _joint_draws(scored, kept, spec, ordinal, names)
        for label, mask in kept.items():
            points = [{m: v for m, v in compute_metrics(scored.y[mask], p[mask], threshold=t, ordinal=ordinal).items()
                       if m in draws[label][0]} for p, t in zip(scored.probs, scored.seed_thresholds)]
            metrics[label] = without_every_class(combine_seeds(points, draws[label], spec), label in incomplete)
            mean_draws[label] = {m: np.mean([d[m] for d in draws[label]], axis=0) for m in points[0]}
    interval, gap_interval = interval_texts(scored, len(kept), spec.level, incomplete)
    return {"min_cases": min_cases, "unit": scored.unit,
            "subgroups": {label: {"n": int(kept[label].sum()), "n_cases": cases[label], "metrics": metrics[label]}
                          for label in kept},
            "too_few": {label: cases[label] for label in rows if label not in kept},
            "worst": _worst(metrics) if len(kept) >= 2 else {},
            "gap": _gap(metrics, mean_draws, spec.level) if len(kept) >= 2 else {},
            "interval": interval, "gap_interval": gap_interval}
