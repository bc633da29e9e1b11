"""`medtransfer demo`: a small offline study (synthetic images, random-init backbones) ending in a results table."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.table import Table

from medtransfer.config import TrainConfig
from medtransfer.progress import Reporter
from medtransfer.report_table import cell
from medtransfer.rundir import is_complete
from medtransfer.runner import train

# Synthetic "patients" with several images each: splits and the bootstrap are by patient.
DEMO_DATA = "synthetic:n=480,size=32,classes=2,groups=120,seed=0"
DEMO_BACKBONES = {"resnet18": 32, "dinov2_vits14": 28}  # DINOv2 needs a multiple of its 14-pixel patch
DEMO_MODES = {"frozen": {"epochs": 60}, "finetune": {"epochs": 6, "lr": 1e-3, "batch_size": 32}}

def demo_configs(out: Path) -> list[TrainConfig]:
    """The embedded default study: every demo backbone in both modes, one seed, weights `none` (offline)."""
    return [TrainConfig(data=DEMO_DATA, backbone=name, weights="none", image_size=size, mode=mode,
                        bootstrap=1000, cache_dir=str(out / "feature-cache"), out=str(out / f"{name}-{mode}"),
                        **settings)
            for name, size in DEMO_BACKBONES.items() for mode, settings in DEMO_MODES.items()]

def run_demo(out: Path, quiet: bool = False) -> list[Path]:
    """Run the demo study (finished runs are reused) and print the results table."""
    reporter = Reporter(quiet)
    runs, reused, started = [], 0, time.perf_counter()
    for cfg in demo_configs(out):
        run_dir = Path(cfg.out)
        reused += is_complete(run_dir)
        if not is_complete(run_dir):
            reporter.log(f"run {cfg.backbone} {cfg.mode}")
            train(cfg, reporter)
        runs.append(run_dir)
    table = Table(title=f"medtransfer demo: {DEMO_DATA}\ntest split, % with 95% CI (bootstrap over patients)")
    for column in ("backbone", "mode", "test AUROC", "test accuracy", "best epoch"):
        table.add_column(column, no_wrap=True)

    for cfg, run_dir in zip(demo_configs(out), runs, strict=True):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        test = metrics["test"]
        table.add_row(cfg.backbone, cfg.mode, cell(test["auroc"]), cell(test["accuracy"]), str(metrics["best_epoch"]))
    reporter.console.print(table)
    reporter.console.print(f"results in {out}/<backbone>-<mode>/ ({time.perf_counter() - started:.0f} s, {reused} finished "
                           f"run(s) reused). Weights "
                           "were random (`none`, offline); with `--weights imagenet` frozen features become useful.",
                           markup=False, highlight=False)
    return runs
