"""Finetune mode: backbone and head trained end to end, best epoch chosen on val, AMP + channels-last on CUDA."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medtransfer.engine.device import autocast
from medtransfer.engine.heads import HeadModule, check_loss, class_weights
from medtransfer.engine.optim import BestEpoch, TrainingLoop, build_optimizer, build_schedule
from medtransfer.engine.pipeline import DataPath, InputPipeline
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


@dataclass(kw_only=True)
class FinetuneSettings(TrainingLoop):
    """What fine-tuning needs beyond the model and the data."""

    lr: float
    weight_decay: float
    augment: bool
    accumulate: int  # batches whose gradients are summed before one optimiser step
    compile: bool


@dataclass
class Step:
    """One training step's state: the model to call (compiled or not), optimiser, scaler, loss weights."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    weight: torch.Tensor | None
    accumulate: int = 1


def train_epoch(model: nn.Module, step: Step, batches: Iterable, inputs: InputPipeline,
                train_mode: Callable[[], None] | None = None,
                on_batch: Callable[[int], None] | None = None) -> tuple[float, int]:
    """One pass over the training batches, `on_batch(1)` after each; returns (mean loss, images seen)."""
    model.train()
    if train_mode:
        train_mode()
    device, total, seen = inputs.device, torch.zeros((), device=inputs.device), 0
    step.optimizer.zero_grad(set_to_none=True)
    for i, (images, y, _) in enumerate(batches, start=1):
        y = y.to(device, non_blocking=True)
        with autocast(device):
            loss = F.cross_entropy(step.forward(inputs(images)).float(), y, weight=step.weight)
        step.scaler.scale(loss / step.accumulate).backward()
        if i % step.accumulate == 0:
            _optimizer_step(step)
        total += loss.detach() * len(y)  # summed on the device: no host sync per batch
        seen += len(y)
        if on_batch:
            on_batch(1)
    if seen and i % step.accumulate:  # the tail of an epoch that did not fill an accumulation window
        _optimizer_step(step)
    return total.item() / max(seen, 1), seen


def _optimizer_step(step: Step) -> None:
    step.scaler.step(step.optimizer)
    step.scaler.update()
    step.optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def predict_rows(model: Classifier, data: DataPath, rows: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """Probabilities for the given rows (in order) and the mean cross-entropy on them."""
    model.eval()
    inputs = InputPipeline(data.pre, data.device)
    probs, loss_sum = np.zeros((len(rows), len(data.table.classes)), dtype=np.float32), 0.0
    position = {int(r): i for i, r in enumerate(rows)}
    for images, targets, batch_rows in data.loader(rows, batch_size):
        with autocast(data.device):
            logits = model(inputs(images)).float()
        loss_sum += F.cross_entropy(logits, targets.to(data.device), reduction="sum").item()
        # Cached batches come back sorted by row: put each prediction at its row's position.
        probs[[position[int(r)] for r in batch_rows]] = logits.softmax(1).cpu().numpy()
    return probs, loss_sum / max(len(rows), 1)


def make_step(model: Classifier, settings: FinetuneSettings, train_targets: np.ndarray, n_classes: int,
              device: torch.device) -> Step:
    """Optimiser over the trainable parameters, loss scaler (fp16 only) and the forward to call."""
    weight = class_weights(train_targets, n_classes).to(device) if settings.class_weights else None
    opt = build_optimizer(settings.optimizer, model.parameters(), settings.lr, settings.weight_decay)
    # fp16 (GPUs without bf16) needs loss scaling; bf16 and CPU do not.
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    forward = torch.compile(model) if settings.compile else model
    return Step(forward, opt, scaler, weight, settings.accumulate)


def finetune(model: Classifier, data: DataPath, train_rows: np.ndarray, val_rows: np.ndarray,
             settings: FinetuneSettings, on_epoch: Callable[[dict], None] | None = None,
             train_mode: Callable[[], None] | None = None,
             on_batch: Callable[[int], None] | None = None) -> tuple[list[dict], int]:
    """Train end to end; load the best epoch's weights into `model`; return (history, best epoch).

    `train_mode` runs after `model.train()` each epoch (partial fine-tuning keeps frozen norm layers in eval);
    `on_batch(1)` after every training batch (the progress bar), `on_epoch(row)` after every epoch.
    """
    device = data.device
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    targets = data.table.frame["target"].to_numpy()
    step = make_step(model, settings, targets[train_rows], len(data.table.classes), device)
    sched = build_schedule(settings.schedule, step.optimizer, settings.epochs)
    loader = data.loader(train_rows, settings.batch_size, shuffle=True, seed=settings.seed)
    inputs = InputPipeline(data.pre, device, settings.augment, settings.seed)
    tracker, history = BestEpoch(settings.select, settings.patience), []
    for epoch in range(1, settings.epochs + 1):
        start, lr = time.perf_counter(), step.optimizer.param_groups[0]["lr"]
        train_loss, seen = train_epoch(model, step, loader, inputs, train_mode, on_batch)
        train_seconds = time.perf_counter() - start
        check_loss(train_loss, epoch, history, settings.lr)  # before val: NaN probabilities would crash sklearn
        sched.step()
        val_prob, val_loss = predict_rows(model, data, val_rows, settings.batch_size)
        if not np.isfinite(val_prob).all():  # weights blown up by the epoch's last steps
            check_loss(float("nan"), epoch, history, settings.lr)
        val_metrics = compute_metrics(targets[val_rows], val_prob)
        tracker.update(epoch, tracker.score(val_metrics, val_loss), model)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
               "val_metric": val_metrics.get(settings.select.removeprefix("val_"), -val_loss), "lr": lr,
               "train_images_per_second": seen / max(train_seconds, 1e-9), "seconds": time.perf_counter() - start}
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if tracker.should_stop():
            break
    model.load_state_dict(tracker.best_state)
    return history, tracker.best_epoch
