"""Tiny real runs written by the runner (a second or two each on CPU), shared by the run-directory tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# Each covers other sections of the metrics: patients and a binary threshold; a kNN probe's head selection over
# three classes without groups; fine-tuned model weights.
RUNS = {
    "grouped": {"data": "synthetic:n=80,size=24,groups=30", "epochs": 2},
    "knn": {"data": "synthetic:n=90,size=24,classes=3", "head": "knn"},
    "finetune": {"data": "synthetic:n=48,size=24", "mode": "finetune", "epochs": 1, "batch_size": 16},
}


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> finished run dir of each of RUNS (resnet18, random weights, 32 px)."""
    import torch

    from medtransfer.config import parse_config
    from medtransfer.runner import train

    root = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and far faster on a busy machine
    try:
        return {name: train(parse_config({"backbone": "resnet18", "weights": "none", "image_size": 32,
                                          "bootstrap": 100, "workers": 0, "device": "cpu",
                                          "cache_dir": str(root / "cache"), "out": str(root / name), **extra})).run_dir.path
                for name, extra in RUNS.items()}
    finally:
        torch.set_num_threads(threads)
