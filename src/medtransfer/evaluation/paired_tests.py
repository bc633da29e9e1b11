"""Paired tests of two models (or setups of several seeds) scored on the same samples.

- `clustered_auroc_test`: Obuchowski's (1997) nonparametric test of two correlated AUROCs from clustered data.
  It assumes clusters (patients) are independent and allows any correlation within a cluster; with one sample per
  cluster it is DeLong's test. Multi-class AUROC is the one-vs-rest macro mean over the classes present.
- `clustered_mcnemar_test`: Durkalski et al.'s (2003) clustered McNemar test of equal accuracy; same assumption
  on clusters. With one sample per cluster and 0/1 correctness it is McNemar's chi-square (no continuity correction).
- Several seeds: the per-sample structural components (AUROC) and correctness (accuracy) are averaged over a
  setup's seeds before the cluster sums; the seed-mean AUROC and accuracy are linear in them. These tests condition
  on the trained models: they ask whether the seed-mean metrics differ on the population the test patients come
  from, not whether a fresh set of seeds would differ (seed-to-seed training variation is not in the variance).
- `delong_test` and `mcnemar_test` (exact) treat every sample as independent; with several images per patient
  their p-values are anti-conservative (simulated type-I error 0.31 and 0.22 at alpha 0.05,
  tests/evaluation/test_paired_tests_clustered.py). `compare_setups` uses the exact McNemar test only without
  groups and with one seed on both sides; for AUROC without groups it uses the clustered test with singleton
  clusters, which is DeLong's.
- p-values are two-sided, from the normal (AUROC) or chi-square (clustered McNemar) approximation, which needs
  a fair number of clusters (60 patients held the level in simulation); only the exact McNemar test is exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import bdtr
from scipy.stats import rankdata

Probs = np.ndarray | Sequence[np.ndarray]  # (n, K) for one seed, or one (n, K) array per seed


def seed_stack(probs: Probs) -> np.ndarray:
    """(S, n, K) float array: a single (n, K) array is one seed."""
    arr = np.asarray(probs, dtype=float)
    arr = arr[None] if arr.ndim == 2 else arr
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ValueError(f"need one (n, K) probability array per seed, got shape {np.shape(probs)}")
    return arr


def cluster_index(groups: np.ndarray | None, n: int) -> np.ndarray:
    """Cluster number 0..I-1 of each sample; every sample its own cluster without groups."""
    if groups is None:
        return np.arange(n)
    if np.shape(groups) != (n,):
        raise ValueError(f"need one group per sample, got groups {np.shape(groups)} for {n} samples")
    return np.unique(np.asarray(groups), return_inverse=True)[1].ravel()


def delong_test(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict[str, float]:
    """DeLong's test of AUROC(a) = AUROC(b) on the same binary labels, by Sun & Xu's (2014) midrank algorithm.

    Returns auc_a, auc_b, diff = auc_a - auc_b, its standard error se, z = diff / se and the two-sided normal p.
    Everything is NaN without both classes; se, z and p are NaN with fewer than two samples of a class.
    Samples are assumed independent: with several images per patient use clustered_auroc_test.
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
    v10, v01 = _placements(scores, positive)
    auc = v10.mean(axis=1)
    diff = float(auc[0] - auc[1])
    out = {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "diff": diff, "se": nan, "z": nan, "p": nan}
    if m < 2 or n < 2:
        return out
    cov = np.cov(v10) / m + np.cov(v01) / n
    # rounding can leave a tiny negative variance for nearly identical models
    se = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    out.update(se=se, **_normal_p(diff, se))
    return out


def _placements(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of each row of scores (R, n): V10 (R, m) of positives, V01 of negatives.

    V10 is the share of negatives a positive outscores, V01 the share of positives that outscore a negative (ties
    count one half), from midranks within each class and over both (Sun & Xu 2014); each averages to the AUROC.
    """
    x, neg = scores[:, positive], scores[:, ~positive]
    m, n = x.shape[1], neg.shape[1]
    tx, ty = rankdata(x, axis=1), rankdata(neg, axis=1)
    tz = rankdata(np.concatenate([x, neg], axis=1), axis=1)
    return (tz[:, :m] - tx) / n, 1 - (tz[:, m:] - ty) / m


def _normal_p(diff: float, se: float) -> dict[str, float]:
    if se > 0:
        z = diff / se
        return {"z": z, "p": math.erfc(abs(z) / math.sqrt(2))}  # 2 Phi(-|z|), without scipy's per-call overhead
    # no sampling variability in the difference: identical rankings (diff 0) or a degenerate split
    return {"z": 0.0 if diff == 0 else float(np.copysign(np.inf, diff)), "p": 1.0 if diff == 0 else 0.0}


def _class_scores(y: np.ndarray, probs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(positive mask, scores (S, n)) per problem of metrics.auroc: class 1 if binary, else each class present."""
    if probs.shape[2] == 2:
        positive = y == 1
        return [(positive, probs[:, :, 1])] if 0 < positive.sum() < len(y) else []
    return [(y == k, probs[:, :, k]) for k in range(probs.shape[2]) if 0 < (y == k).sum() < len(y)]


def _influence(v10: np.ndarray, v01: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Seed-mean AUROC from one setup's placements (S, m), (S, n - m) and, per positive and negative, mean V - AUROC."""
    auc = v10.mean(axis=1, keepdims=True)  # each seed's AUROC
    # the seed-mean AUROC is linear in the components, so averaging them over seeds gives its influence values
    return float(auc.mean()), (v10 - auc).mean(axis=0), (v01 - auc).mean(axis=0)


def clustered_auroc_test(y: np.ndarray, probs_a: Probs, probs_b: Probs,
                         groups: np.ndarray | None = None) -> dict[str, float]:
    """Obuchowski's (1997) clustered test of seed-mean AUROC(a) = AUROC(b); DeLong's test when groups is None.

    probs_a and probs_b are (n, K) or one (n, K) array per seed. Returns auc_a, auc_b (means over seeds of
    metrics.auroc), diff, se, z and the two-sided normal p; NaN where AUROC is undefined, se, z and p NaN when
    a class's positives or negatives lie in fewer than two clusters.
    """
    y = np.asarray(y)
    pa, pb = seed_stack(probs_a), seed_stack(probs_b)
    if y.ndim != 1 or pa.shape[1:] != pb.shape[1:] or pa.shape[1] != len(y):
        raise ValueError(f"need y (n,) and probabilities (n, K) of one shape, got {y.shape}, {pa.shape[1:]}, "
                         f"{pb.shape[1:]}")
    cluster = cluster_index(groups, len(y))
    n_clusters = int(cluster.max()) + 1 if len(y) else 0
    problems = list(zip(_class_scores(y, pa), _class_scores(y, pb)))
    nan = float("nan")
    if not problems:
        return {"auc_a": nan, "auc_b": nan, "diff": nan, "se": nan, "z": nan, "p": nan}
    columns, weights, sizes, aucs = [], [], [], np.zeros(2)
    for (positive, sa), (_, sb) in problems:
        v10, v01 = _placements(np.concatenate([sa, sb]), positive)  # one ranking pass for both setups' seeds
        (auc_a, pos_a, neg_a), (auc_b, pos_b, neg_b) = (_influence(v10[rows], v01[rows])
                                                        for rows in (slice(len(sa)), slice(len(sa), None)))
        aucs += np.array([auc_a, auc_b]) / len(problems)
        for mask, centred in ((positive, pos_a - pos_b), (~positive, neg_a - neg_b)):
            columns.append(np.bincount(cluster[mask], weights=centred, minlength=n_clusters))
            weights.append(1 / (len(problems) * mask.sum()))
            sizes.append(len(np.unique(cluster[mask])))
    diff = float(aucs[0] - aucs[1])
    out = {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "se": nan, "z": nan, "p": nan}
    if min(sizes) < 2:
        return out
    # Obuchowski's S10, S01 (scaled by the clusters holding that kind of unit) and S11 (by all clusters), as one
    # quadratic form so that the macro mean's cross-class covariances come along: the factor matrix is a constant
    # plus a non-negative diagonal, so the variance cannot be negative.
    u, w, c = np.stack(columns, axis=1), np.array(weights), np.array(sizes, dtype=float)
    factor = np.full((len(c), len(c)), n_clusters / (n_clusters - 1))
    np.fill_diagonal(factor, c / (c - 1))
    var = float(w @ (factor * (u.T @ u)) @ w)
    se = float(np.sqrt(max(var, 0.0)))
    out.update(se=se, **_normal_p(diff, se))
    return out


def clustered_mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray,
                           groups: np.ndarray | None = None) -> dict[str, float]:
    """Durkalski et al.'s (2003) clustered McNemar test of equal (seed-mean) accuracy, chi-square with 1 df.

    correct_a and correct_b are (n,) or (S, n) correctness (bool or 0/1), averaged over seeds. With d_i the sum
    over cluster i of correct_a - correct_b, the statistic is (sum d_i)^2 / sum d_i^2; returns diff (accuracy a -
    accuracy b), stat and p (1.0 when no cluster is discordant).
    """
    a, b = np.atleast_2d(np.asarray(correct_a, dtype=float)), np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.ndim != 2 or a.shape[1] != b.shape[1] or b.ndim != 2:
        raise ValueError(f"need correctness (n,) or (S, n) on the same n, got {np.shape(correct_a)}, "
                         f"{np.shape(correct_b)}")
    n = a.shape[1]
    d = np.bincount(cluster_index(groups, n), weights=a.mean(axis=0) - b.mean(axis=0))
    total, square = float(d.sum()), float(d @ d)
    diff = total / n if n else float("nan")
    if square == 0:
        return {"diff": diff, "stat": 0.0, "p": 1.0}
    # the null variance sum d_i^2 (no centring) is the score form that reduces to McNemar's (b - c)^2 / (b + c)
    stat = total**2 / square
    return {"diff": diff, "stat": stat, "p": math.erfc(math.sqrt(stat / 2))}  # chi-square 1 df tail


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test: b01 = a wrong and b right, b10 = a right and b wrong, two-sided binomial p (1.0 if none).

    Samples are assumed independent: with several images per patient use clustered_mcnemar_test.
    """
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"need two correctness vectors of one shape (n,), got {a.shape} and {b.shape}")
    if a.dtype != bool or b.dtype != bool:
        raise ValueError("correctness vectors must be boolean")
    b01, b10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
    # Binomial(b01 + b10, 1/2) is symmetric, so the two-sided exact p (scipy's binomtest) is twice the smaller
    # tail, capped at 1; bdtr gives it without binomtest's search, which dominated simulation time
    p = min(1.0, 2 * float(bdtr(min(b01, b10), b01 + b10, 0.5))) if b01 + b10 else 1.0
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
