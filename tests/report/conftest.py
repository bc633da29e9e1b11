"""A small real study for the report tests: run directories written by the real runner (a few seconds each on CPU)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TASKS = {"binary_lesion": "synthetic:n=120,size=24,groups=60",
         "three-class": "synthetic:n=120,size=24,classes=3,seed=1"}
BACKBONES = {"resnet18": 32, "dinov2_vits14": 28}
MODES = {"frozen": 5, "finetune": 2}
SEEDS = (0, 1)
CV_FOLDS = 3


def _train(out: Path, cache: Path, data: str, task: str, backbone: str, mode: str, seed: int,
           fraction: float = 1.0, **extra: object) -> Path:
    from medtransfer.config import parse_config
    from medtransfer.runner import train

    cfg = parse_config({"data": data, "task": task, "backbone": backbone, "weights": "none",
                        "image_size": BACKBONES[backbone], "mode": mode, "epochs": MODES[mode], "bootstrap": 200,
                        "workers": 0, "seed": seed, "train_fraction": fraction, "out": str(out),
                        "cache_dir": str(cache), "device": "cpu", **extra})
    return train(cfg).run_dir.path


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/<task>/<backbone>-<mode>-s<seed>: 2 tasks × 2 backbones × 2 modes × 2 seeds, one half-data run, one crash;
    runs/cv/: a 3-fold cross-validated frozen resnet18 with 2 seeds, and one frozen run with another lr."""
    import torch

    root = tmp_path_factory.mktemp("study")
    runs, cache = root / "runs", root / "cache"
    threads = torch.get_num_threads()
    # These models are tiny: one thread is as fast alone and far faster on a busy machine (no spinning OpenMP pools).
    torch.set_num_threads(1)
    try:
        for task, data in TASKS.items():
            for backbone in BACKBONES:
                for mode in MODES:
                    for seed in SEEDS:
                        _train(runs / task / f"{backbone}-{mode}-s{seed}", cache, data, task, backbone, mode, seed)
        _train(runs / "binary_lesion" / "resnet18-frozen-s0-half", cache, TASKS["binary_lesion"], "binary_lesion",
               "resnet18", "frozen", 0, fraction=0.5)
        for seed in SEEDS:
            for fold in range(CV_FOLDS):
                _train(runs / "cv" / f"resnet18-frozen-fold{fold}-s{seed}", cache, TASKS["binary_lesion"], "cv",
                       "resnet18", "frozen", seed, folds=CV_FOLDS, fold=fold)
        _train(runs / "three-class" / "resnet18-frozen-lr0.01-s0", cache, TASKS["three-class"], "three-class",
               "resnet18", "frozen", 0, lr=0.01)
    finally:
        torch.set_num_threads(threads)
    crashed = runs / "binary_lesion" / "crashed-copy"
    shutil.copytree(runs / "binary_lesion" / "resnet18-frozen-s0", crashed)
    (crashed / "DONE").unlink()
    return runs


@pytest.fixture(scope="session")
def report_dir(study: Path) -> Path:
    """The report built once on the study."""
    from medtransfer.report.build import build_report

    return build_report(study)


# A 4-class task with patients: two backbones, frozen (linear, MLP and kNN heads) and fine-tuned, two seeds of one.
FOUR_CLASS = "synthetic:n=120,size=24,classes=4,groups=60,seed=2"
FOUR_CLASS_RUNS = (("resnet18", "frozen", "linear", 0), ("resnet18", "frozen", "linear", 1),
                   ("resnet18", "frozen", "mlp", 0), ("resnet18", "frozen", "knn", 0),
                   ("resnet18", "finetune", None, 0), ("dinov2_vits14", "frozen", "linear", 0),
                   ("dinov2_vits14", "finetune", None, 0))


@pytest.fixture(scope="session")
def four_class(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/<backbone>-<mode>-<head>-s<seed> of one 4-class task with patients (about 15 s on one core)."""
    import torch

    root = tmp_path_factory.mktemp("four_class")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for backbone, mode, head, seed in FOUR_CLASS_RUNS:
            heads = {"head": head} if head else {}
            _train(root / "runs" / f"{backbone}-{mode}-{head or 'ft'}-s{seed}", root / "cache", FOUR_CLASS,
                   "four-class", backbone, mode, seed, epochs=6 if mode == "frozen" else 2, bootstrap=100, **heads)
    finally:
        torch.set_num_threads(threads)
    return root / "runs"


@pytest.fixture(scope="session")
def four_class_report(four_class: Path) -> Path:
    """The report of the 4-class study."""
    from medtransfer.report.build import build_report

    return build_report(four_class)
