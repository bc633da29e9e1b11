"""Bootstrap CI cost: per-resample scikit-learn calls (A) vs the vectorised count-based path (B), same data.

Both are measured in this one process, alternating, after a warm-up; medians and the ratio are printed.
Run: .venv/bin/python bench/bootstrap_speed.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from medtransfer.evaluation.bootstrap import BootstrapSpec, bootstrap_ci, resample_counts
from medtransfer.evaluation.metrics import compute_metrics


def sklearn_loop(y: np.ndarray, prob: np.ndarray, n: int, seed: int) -> None:
    counts = resample_counts(len(y), None, n, np.random.default_rng(seed))
    for row in counts:
        idx = np.repeat(np.arange(len(y)), row)
        compute_metrics(y[idx], prob[idx])


def main() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 624)  # the size of the chest X-ray test set
    prob = np.clip(rng.normal(0.5 + 0.3 * (y - 0.5), 0.25), 0, 1)
    prob = np.stack([1 - prob, prob], axis=1)
    n = 200  # resamples per timing; scales linearly
    times: dict[str, list[float]] = {"sklearn per resample": [], "vectorised": []}
    for rep in range(4):
        for name, fn in (("sklearn per resample", lambda: sklearn_loop(y, prob, n, rep)),
                         ("vectorised", lambda: bootstrap_ci(y, prob, BootstrapSpec(n=n, seed=rep)))):
            start = time.perf_counter()
            fn()
            if rep:  # rep 0 is the warm-up
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, value in med.items():
        print(f"{name:22s} {value / n * 1e3:8.3f} ms per resample  ({value / n * 2000:6.2f} s for 2000)")
    print(f"speed-up {med['sklearn per resample'] / med['vectorised']:.0f}x")


if __name__ == "__main__":
    main()
