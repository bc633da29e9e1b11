"""grid-estimate: the projected wall time of studies/huang2024.yaml on this machine, from per-image costs measured
here for each of its backbones (forward for extraction and evaluation; forward + backward + step for training).

The study's data paths are placeholders, so the split sizes are those of the public data sets it names.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.nn import functional as F

from bench.common import device, sync
from medtransfer.engine.device import autocast
from medtransfer.models.backbone import build_backbone
from medtransfer.study.grid import expand
from medtransfer.study.schema import load_study

STUDY = Path(__file__).resolve().parents[1] / "studies" / "huang2024.yaml"
# train / val / test images after the study's splits: Kermany chest X-ray (16-image val folder replaced by 20% of
# train), HAM10000 (10,015 images, 20% test, 20% of the rest val), iChallenge-AMD Training400 (same fractions).
SPLITS = {"chest_xray": {"train": 4173, "val": 1043, "test": 624},
          "ham10000": {"train": 6409, "val": 1603, "test": 2003},
          "amd": {"train": 256, "val": 64, "test": 80}}


def per_image_seconds(backbone_name: str, size: int, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds per image of an inference forward and of a training step (SGD: no optimiser state)."""
    dev = device()
    backbone = build_backbone(backbone_name, "none", size).to(dev)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.zeros(batch, dtype=torch.long, device=dev)
    head = torch.nn.Linear(backbone.num_features, 2).to(dev)
    opt = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=1e-6)

    def forward() -> None:
        with torch.inference_mode(), autocast(dev):
            backbone.eval()(x)

    def step() -> None:
        backbone.train()
        with autocast(dev):
            loss = F.cross_entropy(head(backbone(x)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {}
    for name, fn in (("forward", forward), ("train_step", step)):
        fn()  # warm-up: allocator, kernels, caches
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        out[name] = sorted(times)[len(times) // 2] / batch
    return out


def project(specs: list, costs: dict[str, dict[str, float]]) -> dict[str, float]:
    """Seconds per run kind: one extraction per (data set, backbone) for frozen runs; E epochs for fine-tuning.

    Head training on cached features (seconds) and bootstrap evaluation are left out: they are noise next to hours.
    For comparison, the frozen arm is also costed the seed's way (forward over train and val every epoch).
    """
    frozen = finetune = seed_frozen = 0.0
    extracted: set[tuple[str, str]] = set()
    for spec in specs:
        c, n = spec.config, SPLITS[spec.config.task]
        fwd, train = costs[c.backbone]["forward"], costs[c.backbone]["train_step"]
        if c.mode == "frozen":
            if (c.task, c.backbone) not in extracted:
                extracted.add((c.task, c.backbone))
                frozen += fwd * sum(n.values())
            # The seed's frozen arm: the backbone forward over train and val in every epoch, then test once.
            seed_frozen += c.epochs * (n["train"] + n["val"]) * fwd + n["test"] * fwd
        else:
            finetune += c.epochs * (n["train"] * train + n["val"] * fwd) + (n["val"] + n["test"]) * fwd
    return {"frozen_s": frozen, "finetune_s": finetune, "total_s": frozen + finetune,
            "frozen_seed_method_s": seed_frozen}


def run(smoke: bool = False) -> dict:
    """Measured per-image costs of every backbone and the projected study time."""
    specs = expand(load_study(STUDY), Path("/tmp/unused"))
    names = sorted({s.config.backbone for s in specs}, key=[s.config.backbone for s in specs].index)
    size = specs[0].config.image_size
    on_gpu = device().type == "cuda"
    if smoke:
        costs = {"resnet18": per_image_seconds("resnet18", 32, 2, 1)}
        costs = {name: costs["resnet18"] for name in names}
    else:
        # On CPU the per-image cost hardly depends on the batch; a small one keeps ViT-g's step in memory and time.
        costs = {name: per_image_seconds(name, size, 32 if on_gpu else 2, 3 if on_gpu else 2) for name in names}
    totals = project(specs, costs)
    return {"study": STUDY.name, "runs": len(specs), "image_size": size, "splits": SPLITS,
            "per_image_seconds": costs, **totals, "total_hours": totals["total_s"] / 3600}
