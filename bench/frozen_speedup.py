"""frozen-speedup: the project's frozen run (extract once, then E head epochs) vs the seed's method (a frozen
backbone with the head on top, re-running the forward over train and val every epoch), same data and head.

Both sides start from the data file and end at test probabilities. The project side is `medtransfer.runner.train`
itself (with a fresh, empty cache each time, and the cheapest bootstrap); the seed side decodes and forwards
every training and validation image in every epoch, as the released code does. So that the two differ only in
how often the backbone runs, the seed side trains the very same head: the same initialisation, the same batch
order, and the project's feature standardisation, whose train mean and scale it is handed for free (untimed).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from bench.common import alternate, breastmnist_64, device, summary
from medtransfer.config import TrainConfig, from_config
from medtransfer.data.splits import SplitPlan, assign_splits
from medtransfer.data.load import load_table
from medtransfer.engine.heads import HeadModule
from medtransfer.engine.optim import BestEpoch, build_optimizer, build_schedule
from medtransfer.engine.pipeline import DataPath, InputPipeline
from medtransfer.evaluation.metrics import auroc
from medtransfer.models.backbone import build_backbone
from medtransfer.runner import train


def seed_method(cfg: TrainConfig, scaling: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Frozen backbone + head trained together for E epochs, forwarding every image each epoch; test AUROC."""
    table = load_table(cfg)
    frame = assign_splits(table, from_config(SplitPlan, cfg, train_fraction=1.0, split_seed=cfg.seed))
    rows = {s: np.flatnonzero(frame["split"].to_numpy() == s) for s in ("train", "val", "test")}
    y = table.frame["target"].to_numpy()
    backbone = build_backbone(cfg.backbone, cfg.weights, cfg.image_size, seed=cfg.seed).eval().to(cfg.device)
    torch.manual_seed(cfg.seed)  # as ProbeHead does before building its head
    head = HeadModule(backbone.num_features, len(table.classes), cfg.head).to(cfg.device)
    head.mean.copy_(scaling[0])
    head.scale.copy_(scaling[1])
    opt = build_optimizer(cfg.optimizer, head.parameters(), cfg.lr, cfg.weight_decay)
    sched = build_schedule(cfg.schedule, opt, cfg.epochs)
    data = DataPath(table, backbone.preprocess, torch.device(cfg.device), cfg.workers)  # decodes every epoch
    inputs, tracker = InputPipeline(backbone.preprocess, torch.device(cfg.device)), BestEpoch(cfg.select, None)

    def probabilities(split: str) -> np.ndarray:
        head.eval()
        out = np.zeros((len(rows[split]), len(table.classes)), dtype=np.float32)
        where = {int(r): i for i, r in enumerate(rows[split])}
        with torch.no_grad():
            for images, _, batch_rows in data.loader(rows[split], cfg.batch_size):
                out[[where[int(r)] for r in batch_rows]] = head(backbone(inputs(images))).softmax(1).cpu().numpy()
        return out

    generator = torch.Generator().manual_seed(cfg.seed)  # ProbeHead's batch order
    for epoch in range(1, cfg.epochs + 1):
        head.train()
        order = rows["train"][torch.randperm(len(rows["train"]), generator=generator).numpy()]
        for images, targets, _ in data.loader(order, cfg.batch_size):
            with torch.no_grad():
                features = backbone(inputs(images))
            loss = F.cross_entropy(head(features), targets.to(cfg.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        val = probabilities("val")
        tracker.update(epoch, auroc(y[rows["val"]], val), head)
    head.load_state_dict(tracker.best_state)
    return auroc(y[rows["test"]], probabilities("test"))


def train_scaling(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's standardisation constants, from one reference run of the project (before any timing)."""
    outcome = train(cfg.model_copy(update={"out": str(Path(cfg.cache_dir) / "run")}))
    state = load_file(str(outcome.run_dir.weights_path("head")))
    return state["mean"], state["scale"]


def run(smoke: bool = False) -> dict:
    """Median wall time of both methods, the ratio, the ideal ratio and both test AUROCs."""
    data = breastmnist_64()
    if smoke or data is None:
        source, size, epochs, repeats = "synthetic:n=60,size=16,seed=1", 32, 2, 1
    else:
        source, size, epochs, repeats = str(data), 64, 20, 3
    work = Path(tempfile.mkdtemp(prefix="bench-frozen-"))
    base = {"data": source, "backbone": "resnet18", "weights": "none", "image_size": size, "mode": "frozen",
            "epochs": epochs, "bootstrap": 100, "device": device().type, "workers": 1}
    results: dict[str, list[float]] = {"project": [], "seed": []}
    counter = iter(range(10_000))

    def project() -> None:
        k = next(counter)  # a fresh cache and run folder each time: nothing is reused between repetitions
        cfg = TrainConfig(**base, cache_dir=str(work / f"cache{k}"), out=str(work / f"run{k}"))
        results["project"].append(train(cfg).metrics.test["auroc"].value)

    scaling = train_scaling(TrainConfig(**base, cache_dir=str(work / "reference")))

    def seed() -> None:
        results["seed"].append(seed_method(TrainConfig(**base), scaling))

    times = alternate({"project": project, "seed": seed}, repeats)
    medians = summary(times)["median_s"]
    cfg = TrainConfig(**base)
    frame = assign_splits(load_table(cfg), from_config(SplitPlan, cfg, train_fraction=1.0, split_seed=cfg.seed))
    n = frame["split"].value_counts()
    ideal = epochs * (n["train"] + n["val"]) / len(frame)
    ratio = medians["seed"] / medians["project"]
    return {"data": source, "backbone": "resnet18", "image_size": size, "epochs": epochs,
            "n_train": int(n["train"]), "n_val": int(n["val"]), "n_test": int(n["test"]),
            **summary(times), "ratio": ratio, "ideal_ratio": ideal, "ratio_of_ideal": ratio / ideal,
            "auroc_project": results["project"][-1], "auroc_seed": results["seed"][-1],
            "auroc_difference": abs(results["project"][-1] - results["seed"][-1])}
