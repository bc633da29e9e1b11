"""bootstrap-speed: per-resample scikit-learn calls vs the vectorised count-based bootstrap, same data."""

from __future__ import annotations

import numpy as np

from bench.common import alternate, summary
from medtransfer.evaluation.bootstrap import BootstrapSpec, bootstrap_ci, resample_counts
from medtransfer.evaluation.metrics import compute_metrics


def sklearn_loop(y: np.ndarray, prob: np.ndarray, n: int, seed: int) -> None:
    """The usual way: materialise each resample and call sklearn on it."""
    counts = resample_counts(len(y), None, n, np.random.default_rng(seed))
    for row in counts:
        idx = np.repeat(np.arange(len(y)), row)
        compute_metrics(y[idx], prob[idx])


def run(smoke: bool = False) -> dict:
    """Milliseconds per resample of both, and the speed-up."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 624)  # the size of the chest X-ray test set
    prob = np.clip(rng.normal(0.5 + 0.3 * (y - 0.5), 0.25), 0, 1)
    prob = np.stack([1 - prob, prob], axis=1)
    n, repeats = (10, 1) if smoke else (200, 3)  # resamples per timing; the cost scales linearly
    times = alternate({"sklearn per resample": lambda: sklearn_loop(y, prob, n, 0),
                       "vectorised": lambda: bootstrap_ci(y, prob, BootstrapSpec(n=n, seed=0))}, repeats)
    stats = summary(times)
    per = {name: seconds / n for name, seconds in stats["median_s"].items()}
    return {"n_samples": len(y), "resamples": n, **stats, "ms_per_resample": {k: v * 1e3 for k, v in per.items()},
            "speedup": per["sklearn per resample"] / per["vectorised"]}
