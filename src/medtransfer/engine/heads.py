"""Probe heads on cached features, with the fit/predict contract so grids can clone and sweep them."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medtransfer.engine.optim import BestEpoch, TrainingLoop, build_optimizer, build_schedule
from medtransfer.errors import UserError
from medtransfer.evaluation.selection import selection_values


class HeadModule(nn.Module):
    """Standardise features (train statistics), then a linear layer or the paper's Linear→256→ReLU→Linear."""

    def __init__(self, dim: int, n_classes: int, kind: str = "linear", hidden: int = 256) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        if kind == "mlp":
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
        else:
            self.net = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.net((x - self.mean) / self.scale)


def check_loss(loss: float, epoch: int, history: list[dict], lr: float, fix: str | None = None) -> None:
    """Stop a diverged training (NaN/inf loss) with the epoch, the last finite loss and the fix (a lower lr)."""
    if math.isfinite(loss):
        return
    last = next(((row["epoch"], row["train_loss"]) for row in reversed(history)
                 if math.isfinite(row["train_loss"])), None)
    before = f"last finite loss {last[1]:.4g} in epoch {last[0]}" if last else "no epoch ended with a finite loss"
    raise UserError(f"training (lr {lr:g})", f"diverged: the training loss became {loss} in epoch {epoch} ({before})",
                    fix or f"lower --lr, e.g. --lr {lr / 10:g}")


def check_features(x: np.ndarray, name: str) -> None:
    """Features with NaN/inf (from NaN weights or pixels) would give a NaN head that no lr can fix."""
    bad = int((~np.isfinite(x)).any(axis=1).sum()) if x.ndim == 2 else int((~np.isfinite(x)).sum())
    if bad:
        raise UserError(f"{name} features", f"{bad} of {len(x)} rows hold NaN or inf values",
                        "check --weights (a checkpoint with NaN or inf values) and the images")


def feature_scaling(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Train mean and (floored) standard deviation for `HeadModule`'s standardisation."""
    std = x.std(0)
    # A feature (nearly) constant on train would explode on val/test if divided by its tiny std.
    return x.mean(0), std.clamp_min(1e-2 * float(std.median().clamp_min(1e-12)))


def initial_head(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int, kind: str,
                 seed: int) -> tuple[HeadModule, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The seeded head with the train standardisation, and (features, labels) tensors of train and val."""
    check_features(np.asarray(x), "train")
    check_features(np.asarray(x_val), "val")
    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(np.asarray(x, dtype=np.float32)), torch.as_tensor(y, dtype=torch.long)
    xv, yv = torch.as_tensor(np.asarray(x_val, dtype=np.float32)), torch.as_tensor(y_val, dtype=torch.long)
    module = HeadModule(xt.shape[1], n_classes, kind)
    mean, scale = feature_scaling(xt)
    module.mean.copy_(mean)
    module.scale.copy_(scale)
    return module, (xt, yt), (xv, yv)


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1 over the classes present."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


@dataclass(kw_only=True)
class HeadTraining(TrainingLoop):
    """How probe heads train on cached features; ProbeHead adds one lr and weight decay, HeadSweep a grid of them."""

    head: str  # linear or mlp


@dataclass(kw_only=True)
class ProbeHead(HeadTraining):
    """A head trained on fixed features; the best epoch is chosen on val (sklearn-style estimator)."""

    lr: float
    weight_decay: float

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int) -> ProbeHead:
        """Train on (x, y), evaluating on val each epoch; keep the best epoch's weights in `module_`."""
        module, (xt, yt), (xv, yv) = initial_head(x, y, x_val, y_val, n_classes, self.head, self.seed)
        weight = class_weights(y, n_classes) if self.class_weights else None
        opt = build_optimizer(self.optimizer, module.parameters(), self.lr, self.weight_decay)
        sched = build_schedule(self.schedule, opt, self.epochs)
        tracker, self.history_ = BestEpoch(self.select, self.patience), []
        generator = torch.Generator().manual_seed(self.seed)
        for epoch in range(1, self.epochs + 1):
            start, lr = time.perf_counter(), opt.param_groups[0]["lr"]
            module.train()
            order, total = torch.randperm(len(xt), generator=generator), 0.0
            for batch in order.split(self.batch_size):
                loss = F.cross_entropy(module(xt[batch]), yt[batch], weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            check_loss(total / len(xt), epoch, self.history_, float(self.lr))
            sched.step()
            val_loss, val_prob = self._evaluate(module, xv, yv)
            # Only the selection metric, without sklearn: all of compute_metrics each epoch cost more than training.
            val_metric = float(selection_values(self.select, y_val, val_prob[None], np.array([val_loss]))[0])
            tracker.update(epoch, tracker.score({self.select.removeprefix("val_"): val_metric}, val_loss), module)
            self.history_.append({"epoch": epoch, "train_loss": total / len(xt), "val_loss": val_loss,
                                  "val_metric": val_metric, "lr": lr, "seconds": time.perf_counter() - start})
            if tracker.should_stop():
                break
        module.load_state_dict(tracker.best_state)
        self.module_, self.best_epoch_ = module.eval(), tracker.best_epoch
        return self

    @staticmethod
    @torch.no_grad()
    def _evaluate(module: HeadModule, x: torch.Tensor, y: torch.Tensor) -> tuple[float, np.ndarray]:
        module.eval()
        logits = module(x)
        return F.cross_entropy(logits, y).item(), logits.softmax(1).numpy()

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, K) from the best epoch's weights."""
        return self.module_(torch.as_tensor(np.asarray(x, dtype=np.float32))).softmax(1).numpy()

    def selection(self) -> dict | None:
        """None: one head with its given lr and weight decay, nothing chosen."""
        return None
