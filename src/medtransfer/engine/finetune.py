"""Finetune mode: backbone and head trained end to end, best epoch chosen on val, AMP + channels-last on CUDA."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medtransfer.data.table import SampleTable
from medtransfer.engine.device import autocast
from medtransfer.engine.heads import HeadModule, class_weights
from medtransfer.engine.optim import BestEpoch, build_optimizer, build_schedule
from medtransfer.engine.pipeline import TableDataset, build_transform, make_loader
from medtransfer.evaluation.metrics import compute_metrics
from medtransfer.models.backbone import Backbone


class Classifier(nn.Module):
    """Backbone features → head logits."""

    def __init__(self, backbone: Backbone, n_classes: int, head: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = HeadModule(backbone.num_features, n_classes, head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.head(self.backbone(x))


@dataclass
class FinetuneSettings:
    """What fine-tuning needs beyond the model and the data."""

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    optimizer: str
    schedule: str
    select: str
    patience: int | None
    balance: bool
    augment: bool
    workers: int
    seed: int


def _prepare(model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else images


@torch.no_grad()
def predict_rows(model: Classifier, table: SampleTable, rows: np.ndarray, device: torch.device, batch_size: int,
                 workers: int) -> tuple[np.ndarray, float]:
    """Probabilities for the given rows (in order) and the mean cross-entropy on them."""
    model.eval()
    dataset = TableDataset(table, rows, build_transform(model.backbone.preprocess))
    probs, loss_sum = [], 0.0
    for images, targets, _ in make_loader(dataset, batch_size, False, workers, device):
        with autocast(device):
            logits = model(_prepare(model, images, device)).float()
        loss_sum += F.cross_entropy(logits, targets.to(device), reduction="sum").item()
        probs.append(logits.softmax(1).cpu().numpy())
    return np.concatenate(probs), loss_sum / max(len(rows), 1)


def finetune(model: Classifier, table: SampleTable, train_rows: np.ndarray, val_rows: np.ndarray,
             settings: FinetuneSettings, device: torch.device,
             on_epoch: Callable[[dict], None] | None = None) -> tuple[list[dict], int]:
    """Train end to end; load the best epoch's weights into `model`; return (history, best epoch)."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    targets = table.frame["target"].to_numpy()
    n_classes = len(table.classes)
    weight = class_weights(targets[train_rows], n_classes).to(device) if settings.balance else None
    opt = build_optimizer(settings.optimizer, model.parameters(), settings.lr, settings.weight_decay)
    sched = build_schedule(settings.schedule, opt, settings.epochs)
    # fp16 (GPUs without bf16) needs loss scaling; bf16 and CPU do not.
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    loader = make_loader(TableDataset(table, train_rows, build_transform(model.backbone.preprocess, settings.augment)),
                         settings.batch_size, True, settings.workers, device, seed=settings.seed)
    tracker, history = BestEpoch(settings.select, settings.patience), []
    for epoch in range(1, settings.epochs + 1):
        start, lr, total, seen = time.perf_counter(), opt.param_groups[0]["lr"], 0.0, 0
        model.train()
        for images, y, _ in loader:
            y = y.to(device, non_blocking=True)
            with autocast(device):
                loss = F.cross_entropy(model(_prepare(model, images, device)).float(), y, weight=weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total, seen = total + loss.item() * len(y), seen + len(y)
        sched.step()
        val_prob, val_loss = predict_rows(model, table, val_rows, device, settings.batch_size, settings.workers)
        val_metrics = compute_metrics(targets[val_rows], val_prob)
        tracker.update(epoch, tracker.score(val_metrics, val_loss), model)
        row = {"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val_loss,
               "val_metric": val_metrics.get(settings.select.removeprefix("val_"), -val_loss), "lr": lr,
               "seconds": time.perf_counter() - start}
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if tracker.should_stop():
            break
    model.load_state_dict(tracker.best_state)
    return history, tracker.best_epoch
