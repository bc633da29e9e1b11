"""Paired comparisons of models scored on the same samples.

Bootstrap CIs of metric differences (each resample applied to every model), DeLong's test for correlated AUROCs,
McNemar's exact test on correctness, and Holm's step-down correction across the comparisons of one table.
DeLong and McNemar treat samples as independent; only the bootstrap honours `groups` (patients resampled whole),
so with several images per patient their p-values are optimistic and the bootstrap interval is the one to trust.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm, rankdata

from medtransfer.evaluation.bootstrap import BootstrapSpec, draw_metrics, percentile_interval
from medtransfer.evaluation.metrics import METRICS, compute_metrics

COLUMNS = ("a", "b", "auroc_diff", "auroc_low", "auroc_high", "accuracy_diff", "accuracy_low", "accuracy_high",
           "delong_p", "mcnemar_p", "delong_p_holm", "mcnemar_p_holm")


def _check_probs(y: np.ndarray, probs: Sequence[np.ndarray]) -> None:
    shapes = {np.shape(p) for p in probs}
    n = len(y) if np.ndim(y) == 1 else -1
    if np.ndim(y) != 1 or any(len(s) != 2 or s[0] != n for s in shapes) or len(shapes) > 1:
        raise ValueError(f"need y (n,) and every prob (n, K) of one shape, got y {np.shape(y)} and {sorted(shapes)}")


def _paired_draws(y: np.ndarray, probs: Sequence[np.ndarray], spec: BootstrapSpec,
                  groups: np.ndarray | None) -> list[dict[str, np.ndarray]]:
    """Every metric of every model on the same spec.n resamples: each block of counts is drawn once, used by all."""
    if spec.n < 1:
        raise ValueError(f"need at least one resample, got {spec.n}")
    if groups is not None and np.shape(groups) != (len(y),):
        raise ValueError(f"need one group per sample, got groups {np.shape(groups)} for {len(y)} samples")
    return draw_metrics(y, probs, spec, groups)  # the resamples each model's bootstrap_ci used


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
    metrics: Sequence[str] = ("auroc", "accuracy"),
) -> dict[str, dict[str, float]]:
    """{metric: {value, low, high}} for metric(a) - metric(b): whole-split value, percentile interval of paired resamples."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {METRICS}")
    y, prob_a, prob_b = np.asarray(y), np.asarray(prob_a, dtype=float), np.asarray(prob_b, dtype=float)
    _check_probs(y, [prob_a, prob_b])
    draws_a, draws_b = _paired_draws(y, [prob_a, prob_b], spec, groups)
    return _diff_summary(compute_metrics(y, prob_a), compute_metrics(y, prob_b), draws_a, draws_b, metrics,
                         spec.level)


def delong_test(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict[str, float]:
    """DeLong's test of AUROC(a) = AUROC(b) on the same binary labels, by Sun & Xu's (2014) midrank algorithm.

    Returns auc_a, auc_b, diff = auc_a - auc_b, its standard error se, z = diff / se and the two-sided normal p.
    Everything is NaN without both classes; se, z and p are NaN with fewer than two samples of a class.
    """
    y = np.asarray(y)
    scores = np.stack([np.asarray(score_a, dtype=float), np.asarray(score_b, dtype=float)])
    if y.ndim != 1 or scores.shape != (2, len(y)):
        raise ValueError(f"need y, score_a and score_b of one shape (n,), got {y.shape}, {np.shape(score_a)}, "
                         f"{np.shape(score_b)}")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("DeLong's test needs binary labels 0/1")
    positive = y == 1
    m, n = int(positive.sum()), int((~positive).sum())
    nan = float("nan")
    if m == 0 or n == 0:
        return {"auc_a": nan, "auc_b": nan, "diff": nan, "se": nan, "z": nan, "p": nan}
    x, neg = scores[:, positive], scores[:, ~positive]
    # midranks within positives, within negatives and over both: ties count one half in every placement
    tx, ty = rankdata(x, axis=1), rankdata(neg, axis=1)
    tz = rankdata(np.concatenate([x, neg], axis=1), axis=1)
    auc = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    diff = float(auc[0] - auc[1])
    out = {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "diff": diff, "se": nan, "z": nan, "p": nan}
    if m < 2 or n < 2:
        return out
    v10 = (tz[:, :m] - tx) / n  # share of negatives each positive beats (DeLong's structural components)
    v01 = 1 - (tz[:, m:] - ty) / m  # share of positives that beat each negative
    cov = np.cov(v10) / m + np.cov(v01) / n
    # rounding can leave a tiny negative variance for nearly identical models
    se = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    if se > 0:
        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    else:  # no sampling variability in the difference: identical rankings (diff 0) or a degenerate split
        z = 0.0 if diff == 0 else float(np.copysign(np.inf, diff))
        p = 1.0 if diff == 0 else 0.0
    out.update(se=se, z=z, p=p)
    return out


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test: b01 = a wrong and b right, b10 = a right and b wrong, two-sided binomial p (1.0 if none)."""
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"need two correctness vectors of one shape (n,), got {a.shape} and {b.shape}")
    if a.dtype != bool or b.dtype != bool:
        raise ValueError("correctness vectors must be boolean")
    b01, b10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
    p = float(binomtest(b10, b01 + b10, 0.5).pvalue) if b01 + b10 else 1.0
    return {"b01": b01, "b10": b10, "p": p}


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values in the input order; NaNs stay NaN and are not counted among the m tests."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"need a flat sequence of p-values, got shape {p.shape}")
    tested = np.flatnonzero(~np.isnan(p))
    if np.any((p[tested] < 0) | (p[tested] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted = np.full(p.shape, np.nan)
    # the i-th smallest (from 0) is multiplied by m - i; the running max keeps the adjusted values monotone
    adjusted[order] = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    return adjusted


def compare_models(
    y: np.ndarray,
    probs: dict[str, np.ndarray],
    spec: BootstrapSpec,
    groups: np.ndarray | None = None,
    pairs: list[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """One row per pair (a, b) (all pairs by default): paired bootstrap differences a - b, DeLong and McNemar p, Holm."""
    pairs = list(itertools.combinations(probs, 2)) if pairs is None else list(pairs)
    unknown = {name for pair in pairs for name in pair} - set(probs)
    if unknown:
        raise ValueError(f"pairs name models not in probs: {sorted(unknown)}")
    y, probs = np.asarray(y), {name: np.asarray(prob, dtype=float) for name, prob in probs.items()}
    _check_probs(y, list(probs.values()))
    used = list(dict.fromkeys(name for pair in pairs for name in pair))
    # one pass of resamples for all models: each model's metrics are computed once however many pairs it is in
    draws = dict(zip(used, _paired_draws(y, [probs[name] for name in used], spec, groups))) if used else {}
    points = {name: compute_metrics(y, probs[name]) for name in used}
    rows = []
    for a, b in pairs:
        diff = _diff_summary(points[a], points[b], draws[a], draws[b], ("auroc", "accuracy"), spec.level)
        binary = probs[a].shape[1] == 2
        rows.append({
            "a": a,
            "b": b,
            **{f"{name}_{key}": ci[field] for name, ci in diff.items()
               for key, field in (("diff", "value"), ("low", "low"), ("high", "high"))},
            "delong_p": delong_test(y, probs[a][:, 1], probs[b][:, 1])["p"] if binary else float("nan"),
            "mcnemar_p": mcnemar_test(probs[a].argmax(axis=1) == y, probs[b].argmax(axis=1) == y)["p"],
        })
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["delong_p_holm"] = holm(frame["delong_p"].to_numpy(dtype=float))
    frame["mcnemar_p_holm"] = holm(frame["mcnemar_p"].to_numpy(dtype=float))
    return frame
