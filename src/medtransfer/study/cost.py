"""Dry-run cost estimate: backbone FLOPs (counted on the meta device, no weights) × image passes."""

from __future__ import annotations

import time
from functools import cache

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from medtransfer.models.backbone import create_model, input_size
from medtransfer.models.catalog import resolve
from medtransfer.study.grid import RunSpec


@cache
def forward_flops(backbone: str, image_size: int | None) -> float:
    """FLOPs of one forward pass of one image at the run's input size (shapes only: nothing is computed)."""
    with torch.device("meta"):
        model = create_model(resolve(backbone).timm_name, "none", image_size, 0)
    model.eval()  # batch-norm statistics: a single image is fine in eval mode
    size = image_size or input_size(model)
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, size, size, device="meta"))
    return float(counter.get_total_flops())


@cache
def measured_flops_per_second() -> float:
    """This machine's sustained FLOP/s on a small ResNet forward (a rough, honest yardstick)."""
    model = timm.create_model("resnet18", num_classes=0).eval()
    x = torch.randn(32, 3, 64, 64)
    flops = forward_flops("resnet18", 64) * len(x)
    with torch.inference_mode():
        model(x)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 1.0:
            model(x)
            n += 1
    return flops * n / (time.perf_counter() - start)


def run_cost(spec: RunSpec, counts: dict[str, int], extracts: bool) -> float:
    """FLOPs of one run: frozen = one pass over every image (when it fills the cache); finetune = forward and
    backward (≈3 forwards) over train plus a val pass per epoch, then val and test once."""
    flops = forward_flops(spec.config.backbone, spec.config.image_size)
    if spec.config.mode == "frozen":
        return flops * sum(counts.values()) if extracts else 0.0
    epochs = spec.config.epochs or 1
    return flops * (epochs * (3 * counts["train"] + counts["val"]) + counts["val"] + counts["test"])
