"""Top-label calibration: ECE (plug-in and debiased), reliability curves, and logistic recalibration; per split or
per resample.

Bins are equal-width on the top-label confidence (the largest probability of a row) and closed on the right:
with edges = np.linspace(0, 1, bins + 1), bin i holds edges[i] < conf <= edges[i + 1]; a confidence of exactly 0
(only a degenerate all-zero row) goes to the first bin. Every function here bins through `_bin_index`, so a
confidence lying exactly on an edge lands in the same bin for a whole split and for each resample.

The estimand of `debiased_ece` is the population binned top-label ECE, sum_b P(bin b) |E[correct - conf | bin b]|
with these bins. The plug-in estimate (`expected_calibration_error`) is biased upward, most where a bin's gap is
near 0: |mean gap| >= 0 even when the expected gap is 0. `debiased_ece` subtracts, bin by bin, the bias that a
normal model of the bin's mean gap implies (Kumar et al. 2019, "Verified uncertainty calibration", in closed form).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from scipy.stats import norm

LOGIT_EPS = 1e-6  # probabilities are clipped to [eps, 1 - eps] so that a saturated output keeps a finite logit
NEWTON_STEPS = 100  # fits converge in < 10 steps, or a few dozen when far steps are cut (MAX_REACH); else NaN
NEWTON_TOL = 1e-6  # on the step (relative): Newton converges quadratically, the error after it is ~1e-12
HALVE_ABOVE = 0.5  # Newton steps moving some logit by more than this are checked against the likelihood
MAX_REACH = 5.0  # and none moves a logit by more than this


def _edges(bins: int) -> np.ndarray:
    if not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    return np.linspace(0.0, 1.0, bins + 1)


def _top_label(y: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence (max probability) and correctness of the argmax (as 0/1 floats), per sample."""
    y, prob = np.asarray(y), np.asarray(prob, dtype=float)
    if prob.ndim != 2 or y.shape != (len(prob),):
        raise ValueError(f"need prob (n, K) and y (n,), got prob {prob.shape} and y {y.shape}")
    if not np.all((prob >= 0) & (prob <= 1)):
        raise ValueError("probabilities must lie in [0, 1] (and not be NaN)")
    # argmax takes the first of tied classes, as metrics.py does for the predicted label
    return prob.max(axis=1), (prob.argmax(axis=1) == y).astype(float)


def _bin_index(conf: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # side="left" sends a confidence equal to an edge into the bin that edge closes: (lo, hi]
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, len(edges) - 2)


def reliability_curve(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin mean confidence, accuracy (NaN in empty bins) and count, plus the bin edges, for a reliability diagram."""
    edges = _edges(bins)
    conf, correct = _top_label(y, prob)
    idx = _bin_index(conf, edges)
    count = np.bincount(idx, minlength=bins)
    filled = count > 0

    def mean(values: np.ndarray) -> np.ndarray:
        total = np.bincount(idx, weights=values, minlength=bins)
        return np.divide(total, count, out=np.full(bins, np.nan), where=filled)

    return {"edges": edges, "confidence": mean(conf), "accuracy": mean(correct), "count": count}


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: sum over bins of |accuracy - mean confidence| * n_bin / n (NaN for an empty split)."""
    curve = reliability_curve(y, prob, bins)
    n = curve["count"].sum()
    if n == 0:
        return float("nan")
    filled = curve["count"] > 0
    gap = np.abs(curve["accuracy"][filled] - curve["confidence"][filled])
    return float((gap * curve["count"][filled]).sum() / n)


def _check_counts(counts: np.ndarray, n: int) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[1] != n:
        raise ValueError(f"counts must be (B, {n}), got {counts.shape}")
    if np.any(counts < 0):
        raise ValueError("counts must be non-negative")
    return counts


def _bin_sums(y: np.ndarray, prob: np.ndarray, counts: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    """Per resample and bin (each (B, bins)): the weight, the sum of gaps (correct - conf) and of squared gaps."""
    edges = _edges(bins)
    conf, correct = _top_label(y, prob)
    counts = _check_counts(counts, len(conf))
    # A sample's bin does not depend on the draw, so one (B, n) @ (n, 3 bins) product gives every bin of every
    # resample without re-binning.
    gap = correct - conf
    member = np.zeros((len(conf), bins))
    member[np.arange(len(conf)), _bin_index(conf, edges)] = 1.0
    sums = counts @ np.hstack([member, member * gap[:, None], member * gap[:, None] ** 2])
    return sums[:, :bins], sums[:, bins:2 * bins], sums[:, 2 * bins:]


def ece_for_counts(y: np.ndarray, prob: np.ndarray, counts: np.ndarray, bins: int = 15) -> np.ndarray:
    """Plug-in top-label ECE for each resample (row of per-sample draw counts, shape (B, n)); NaN for an empty row."""
    weight, gap, _ = _bin_sums(y, prob, counts, bins)
    # |acc - conf| * n_bin / N = |sum of (correct - conf) over the bin| / N
    total = weight.sum(axis=1)
    return np.divide(np.abs(gap).sum(axis=1), total, out=np.full(len(weight), np.nan), where=total > 0)


def debiased_ece_for_counts(y: np.ndarray, prob: np.ndarray, counts: np.ndarray, bins: int = 15) -> np.ndarray:
    """Debiased top-label ECE (see the module docstring), truncated at 0, for each resample; NaN for an empty row.

    Per bin with n_b samples, mean gap m and squared standard error s^2 = (sample variance of the gaps) / n_b:
    the bin contributes n_b / n * (2 |m| - E|N(|m|, s^2)|), i.e. |m| less the plug-in's bias were the true gap |m|.
    A bin of one sample (no variance estimate) contributes its plug-in term.
    """
    weight, gap_sum, sq_sum = _bin_sums(y, prob, counts, bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.abs(np.divide(gap_sum, weight, out=np.zeros_like(weight), where=weight > 0))
        var = np.divide(sq_sum - weight * m**2, (weight - 1) * weight, out=np.zeros_like(weight), where=weight > 1)
        s = np.sqrt(np.maximum(var, 0.0))  # rounding can leave a tiny negative variance for equal gaps
        z = np.divide(m, s, out=np.full_like(m, np.inf), where=s > 0)
        # E|N(m, s^2)| = s sqrt(2/pi) exp(-z^2/2) + m (1 - 2 Phi(-z)); with s = 0 it is m and nothing is removed
        folded = np.where(s > 0, 2 * s * norm.pdf(z) + m * (1 - 2 * norm.cdf(-z)), m)
    total = weight.sum(axis=1)
    per_bin = (weight * (2 * m - folded)).sum(axis=1)
    ece = np.divide(per_bin, total, out=np.full(len(weight), np.nan), where=total > 0)
    # Below 0 only where every gap is within noise of 0; the estimand is never negative.
    return np.where(np.isnan(ece), np.nan, np.maximum(ece, 0.0))


def debiased_ece(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> float:
    """Debiased top-label ECE of a whole split (see debiased_ece_for_counts); NaN for an empty split."""
    return float(debiased_ece_for_counts(y, prob, np.ones((1, len(y))), bins)[0])


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), LOGIT_EPS, 1 - LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def calibration_fit_for_counts(y: np.ndarray, p_pos: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Logistic recalibration of binary y on x = logit(p_pos), per resample (counts as frequency weights).

    calibration_slope: b of logit P(y=1) = a + b x; calibration_intercept: a of the offset model
    logit P(y=1) = a + x (slope fixed at 1, "calibration in the large"). Fitted by Newton's method, all rows at
    once; NaN where the maximum-likelihood fit does not exist (one class only; for the slope also classes
    separated by the score).
    """
    x, t = _logit(p_pos), (np.asarray(y) == 1).astype(float)
    counts = _check_counts(counts, len(x))
    drawn = counts > 0
    pos, neg = drawn & (t > 0), drawn & (t == 0)
    both = pos.any(axis=1) & neg.any(axis=1)
    # The slope's MLE exists iff no threshold on x splits the classes, ties included (Albert & Anderson 1984);
    # checked exactly here, since Newton's method on separated data only creeps towards an infinite slope.
    (lo_pos, hi_pos), (lo_neg, hi_neg) = _ends(x, pos), _ends(x, neg)
    overlap = both & (hi_neg > lo_pos) & (hi_pos > lo_neg)
    out = {}
    for name, slope, fits in (("calibration_slope", True, overlap), ("calibration_intercept", False, both)):
        out[name] = np.full(len(counts), np.nan)
        if fits.any():
            # resamples' fits lie near the fit to their mean counts (~ the whole split): starting there saves steps
            start = _newton(x, t, counts[fits].mean(axis=0, keepdims=True), slope) if fits.sum() > 1 else None
            a, b = _newton(x, t, counts[fits], slope, start)
            out[name][fits] = b if slope else a
    return out


def _ends(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of mask (rows, n): the smallest and largest x where it is True (inf and -inf where nowhere)."""
    return (np.min(np.where(mask, x, np.inf), axis=1, initial=np.inf),
            np.max(np.where(mask, x, -np.inf), axis=1, initial=-np.inf))


def _log_likelihood(x: np.ndarray, t: np.ndarray, w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # log P(t) = -log(1 + exp(-(2t - 1) eta)): finite however saturated, so a zero weight stays a zero term
    return -(w * np.logaddexp(0.0, (1 - 2 * t) * (a[:, None] + b[:, None] * x))).sum(axis=1)


def _halving(x: np.ndarray, t: np.ndarray, w: np.ndarray, a: np.ndarray, b: np.ndarray, da: np.ndarray,
             db: np.ndarray) -> np.ndarray:
    """Per row the step factor 1, 1/2, 1/4, ... at which the log-likelihood does not fall; 0 if none of 30 does."""
    old, step = _log_likelihood(x, t, w, a, b), np.ones(len(a))
    for _ in range(30):
        worse = ~(_log_likelihood(x, t, w, a + step * da, b + step * db) >= old - 1e-12 * np.abs(old))
        if not worse.any():
            return step
        step[worse] /= 2
    return np.where(worse, 0.0, step)


def _newton(x: np.ndarray, t: np.ndarray, w: np.ndarray, slope: bool,
            start: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the weighted logistic fit of t on a + b x per row of w, b fixed at 1 unless `slope`; NaN if unfit.

    Newton's method; a large step is cut and halved until the likelihood does not fall, since it can overshoot
    into saturated logits where the curvature vanishes (small steps, near the maximum, are safe and not checked:
    that check would cost as much as the step). Converged means a tiny step and a ~0 gradient; a row still
    moving after NEWTON_STEPS is NaN (callers leave out rows without a maximum beforehand). start: one (a, b)
    for every row; without it (or if it is NaN), (0, 1), a perfectly calibrated model's values.
    """
    a, b = np.zeros(len(w)), np.ones(len(w))
    if start is not None and np.isfinite(start[0]).all() and np.isfinite(start[1]).all():
        a, b = a + start[0], b * start[1]
    active = np.arange(len(w))
    powers = np.c_[np.ones_like(x), x, x * x]  # the sums of the gradient and Hessian as two matrix products
    x_lo, x_hi = _ends(x, w > 0)  # only drawn samples' logits count; a + b x is linear, so its ends bound them
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(NEWTON_STEPS):
            wa, aa, ba = (w, a.copy(), b.copy()) if len(active) == len(w) else (w[active], a[active], b[active])
            mu = expit(aa[:, None] + ba[:, None] * x)
            (g0, g1, _), (h00, h01, h11) = ((wa * (t - mu)) @ powers).T, ((wa * mu * (1 - mu)) @ powers).T
            if slope:
                det = h00 * h11 - h01**2
                da, db = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
            else:
                g1, da, db = 0.0, g0 / h00, np.zeros(len(active))
            # reach: the most any sample's logit a + b x moves. Near saturation the curvature vanishes and a full
            # step can be huge, so it is first cut to MAX_REACH, then halved until the likelihood does not fall.
            lo, hi = (x_lo, x_hi) if len(active) == len(w) else (x_lo[active], x_hi[active])
            reach = np.maximum(np.abs(da + db * lo), np.abs(da + db * hi))
            cut = np.minimum(1.0, MAX_REACH / reach)
            da, db = da * cut, db * cut
            big = reach > HALVE_ABOVE
            if big.any():
                step = _halving(x, t, wa[big], aa[big], ba[big], da[big], db[big])
                da[big], db[big] = step * da[big], step * db[big]
            # A NaN step (0/0: every fitted probability saturated) leaves a NaN row, which stays active till the end.
            a[active], b[active] = aa + da, ba + db
            # a singular system (e.g. one distinct score) can give a zero step anywhere: ask for a ~0 gradient too
            flat = np.abs(g0) + np.abs(g1) < 1e-6 * (1 + wa.sum(axis=1))
            small = np.abs(da) + np.abs(db) < NEWTON_TOL * (1 + np.abs(a[active]) + np.abs(b[active]))
            active = active[~(small & flat)]
            if not len(active):
                break
    a[active], b[active] = np.nan, np.nan  # still moving, or NaN: the likelihood has no maximum
    return a, b
