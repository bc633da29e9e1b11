"""Optimisers, schedules and model selection shared by probe heads and fine-tuning."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(kw_only=True)
class TrainingLoop:
    """What every training loop here takes (probe heads and fine-tuning): epochs, batches, optimiser, schedule,
    model selection and loss weights.

    Fields are named as TrainConfig's, which holds their defaults: build subclasses with `config.from_config`.
    """

    epochs: int
    batch_size: int
    optimizer: str
    schedule: str
    select: str
    patience: int | None
    class_weights: bool  # inverse-frequency loss weights
    seed: int


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """adam, adamw or sgd (momentum 0.9, Nesterov)."""
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)


def build_schedule(name: str, optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: cosine to zero, step (÷10 at 50% and 75%, as MedMNIST), or constant."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    if name == "step":
        milestones = [max(1, int(epochs * 0.5)), max(1, int(epochs * 0.75))]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


class BestEpoch:
    """Keeps the state of the best epoch by the selection metric and says when patience has run out."""

    def __init__(self, select: str, patience: int | None) -> None:
        self.select, self.patience = select, patience
        self.best_score, self.best_epoch, self.best_state = -math.inf, -1, None
        self.since_best = 0

    def score(self, val_metrics: dict[str, float], val_loss: float) -> float:
        """Higher is better: the chosen val metric, or minus the val loss."""
        if self.select == "val_loss":
            return -val_loss
        value = val_metrics[self.select.removeprefix("val_")]
        return value if math.isfinite(value) else -math.inf

    def update(self, epoch: int, score: float, module: torch.nn.Module) -> bool:
        """Record the epoch; keep a copy of the weights when it is the best so far."""
        if score > self.best_score or self.best_state is None:
            self.best_score, self.best_epoch, self.since_best = score, epoch, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in module.state_dict().items()})
            return True
        self.since_best += 1
        return False

    def should_stop(self) -> bool:
        """True once `patience` epochs have passed without improvement."""
        return self.patience is not None and self.since_best >= self.patience
