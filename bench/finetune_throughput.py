"""finetune-throughput: the project's fine-tune epoch (image cache → loader → InputPipeline → train_epoch) vs a
plain minimal PyTorch loop over pre-made, normalised, in-memory tensors: same model, batch, optimiser and data."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from bench.common import alternate, breastmnist_64, device, summary
from medtransfer.data.npz import load_npz
from medtransfer.data.synthetic import load_synthetic
from medtransfer.engine.device import autocast
from medtransfer.engine.finetune import Classifier, FinetuneSettings, make_step, train_epoch
from medtransfer.engine.image_cache import cached_images
from medtransfer.engine.pipeline import DataPath, InputPipeline
from medtransfer.models.backbone import build_backbone


def run(smoke: bool = False) -> dict:
    """Training images/s of both loops and their ratio (project ÷ plain)."""
    data = breastmnist_64()
    if smoke or data is None:
        table, size, batch, n, repeats = load_synthetic("synthetic:n=16,size=20"), 32, 8, 16, 1
    else:
        table, size, batch, n, repeats = load_npz(data), 64, 32, 512, 9
    dev = device()
    torch.manual_seed(0)
    model = Classifier(build_backbone("resnet18", "none", size), len(table.classes), "linear").to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    plain_model = copy.deepcopy(model)
    rows = np.arange(n)
    cache_path, _ = cached_images(Path(tempfile.mkdtemp(prefix="bench-finetune-")), table, model.backbone.preprocess, 1)
    data_path = DataPath(table, model.backbone.preprocess, dev, 1, cache_path)
    settings = FinetuneSettings(epochs=1, lr=1e-4, weight_decay=0.0, batch_size=batch, optimizer="adam",
                                schedule="none", select="val_auroc", patience=None, class_weights=False,
                                augment=False, seed=0, accumulate=1, compile=False)
    step = make_step(model, settings, table.frame["target"].to_numpy()[rows], len(table.classes), dev)
    loader, inputs = data_path.loader(rows, batch, shuffle=True), InputPipeline(model.backbone.preprocess, dev)

    # The limit: tensors already normalised, on the device, in batches; nothing but forward, backward, step.
    images = torch.from_numpy(np.array(np.load(cache_path, mmap_mode="r")[:n]))
    targets = torch.from_numpy(table.frame["target"].to_numpy()[:n].copy())
    made = [(inputs(images[i:i + batch]), targets[i:i + batch].to(dev)) for i in range(0, n, batch)]
    plain_opt = torch.optim.Adam(plain_model.parameters(), lr=1e-4)

    def plain() -> None:
        plain_model.train()
        for x, y in made:
            with autocast(dev):  # the same AMP as the project on CUDA; nothing on CPU
                loss = F.cross_entropy(plain_model(x).float(), y)
            plain_opt.zero_grad(set_to_none=True)
            loss.backward()
            plain_opt.step()

    times = alternate({"plain loop": plain, "project": lambda: train_epoch(model, step, loader, inputs)}, repeats)
    stats = summary(times)
    per_second = {name: n / seconds for name, seconds in stats["median_s"].items()}
    return {"images": n, "image_size": size, "batch_size": batch, "optimizer": "adam", "augment": False, **stats,
            "images_per_second": per_second, "ratio": per_second["project"] / per_second["plain loop"]}
