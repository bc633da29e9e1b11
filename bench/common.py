"""What every benchmark shares: A/B timing in one process, memory sampling, the machine's description."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def alternate(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each function, run in turn after `warmup` untimed rounds.

    The order flips every round (ABC CBA ABC …): drift, and any advantage of going first or last, hits all alike.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(warmup + repeats):
        for name, fn in (list(fns.items()) if rep % 2 == 0 else list(fns.items())[::-1]):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def summary(times: dict[str, list[float]]) -> dict:
    """Every repetition and the median of each side."""
    return {"seconds": times, "median_s": {name: statistics.median(v) for name, v in times.items()}}


def sync() -> None:
    """Wait for queued GPU work so wall times are real."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def machine() -> dict:
    """What the figures came from: CPU, cores, threads, GPU, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version()}


def device_label() -> str:
    """Short name for result files: the GPU model, else 'cpu<cores>'."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace("NVIDIA ", "").replace(" ", "-").lower()
    return f"cpu{os.cpu_count()}"


def rss_anon_kb() -> int:
    """This process's anonymous resident memory (RssAnon): heap and tensors, not pages of mapped files."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class PeakSampler:
    """Samples RssAnon on a thread every `interval` seconds; `peak_kb` is the largest value seen."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak_kb = interval, rss_anon_kb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, rss_anon_kb())
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, rss_anon_kb())


def breastmnist_64() -> Path | None:
    """The shared BreastMNIST 64px file, or None when ../shared/data is missing."""
    path = SHARED_DATA / "medmnist" / "breastmnist_64.npz"
    return path if path.exists() else None
