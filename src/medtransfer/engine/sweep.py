"""A grid of probe heads (lr × weight decay) trained together on one feature cache, as in DINOv2's linear evaluation."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from medtransfer.engine.heads import HeadModule, HeadTraining, check_loss, class_weights, initial_head
from medtransfer.engine.optim import build_schedule
from medtransfer.evaluation.selection import as_scores, selection_values

BETA1, BETA2, EPS, MOMENTUM = 0.9, 0.999, 1e-8, 0.9  # torch's Adam defaults and optim.py's SGD momentum


class StackedOptimizer:
    """torch's single-tensor Adam, AdamW or Nesterov SGD, applied per head to parameters stacked on dim 0."""

    def __init__(self, name: str, params: list[torch.Tensor], weight_decays: np.ndarray) -> None:
        self.name, self.params, self.steps = name, params, 0
        self.weight_decays = np.asarray(weight_decays, dtype=float)
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in params]

    def zero_grad(self) -> None:
        """Drop the gradients (set to None, as ProbeHead does)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lrs: np.ndarray) -> None:
        """One update with each head's current lr (float64, like torch's param-group lr, rounded once to float32)."""
        self.steps += 1
        dtype = self.params[0].dtype
        decoupled = self.name == "adamw"
        decay = torch.as_tensor(1 - lrs * self.weight_decays if decoupled else self.weight_decays, dtype=dtype)
        adam = self.name in ("adam", "adamw")
        scale = torch.as_tensor(-lrs / (1 - BETA1**self.steps) if adam else -lrs, dtype=dtype)
        for p, state in zip(self.params, self.state, strict=True):
            shape = (-1,) + (1,) * (p.dim() - 1)  # one value per head, broadcast over the head's parameter
            grad = p.grad
            if decoupled:
                p.mul_(decay.view(shape))  # AdamW: shrink the weights, not the gradient
            else:
                grad = grad + decay.view(shape) * p  # Adam and SGD: L2 added to the gradient
            if adam:
                if not state:
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - BETA1)
                exp_avg_sq.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
                denom = (exp_avg_sq.sqrt() / (1 - BETA2**self.steps) ** 0.5).add_(EPS)
                p.add_(scale.view(shape) * exp_avg / denom)
            else:
                if "momentum" not in state:
                    state["momentum"] = grad.detach().clone()
                else:
                    state["momentum"].mul_(MOMENTUM).add_(grad)
                p.add_(scale.view(shape) * grad.add(state["momentum"], alpha=MOMENTUM))  # Nesterov


def stacked_logits(params: dict[str, torch.Tensor], z: torch.Tensor, kind: str) -> torch.Tensor:
    """Logits (n, H, K) of every head on standardised features z (n, D); params named as `HeadModule.net`'s."""
    n = len(z)
    if kind == "mlp":
        w1, b1, w2, b2 = params["0.weight"], params["0.bias"], params["2.weight"], params["2.bias"]
        h, hidden, dim = w1.shape
        # The first layer of all heads is one matmul: the input is shared.
        inner = F.linear(z, w1.reshape(h * hidden, dim), b1.reshape(h * hidden)).relu().view(n, h, hidden)
        return torch.baddbmm(b2.unsqueeze(1), inner.transpose(0, 1), w2.transpose(1, 2)).transpose(0, 1)
    w, b = params["weight"], params["bias"]
    h, k, dim = w.shape
    return F.linear(z, w.reshape(h * k, dim), b.reshape(h * k)).view(n, h, k)


def stacked_loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Each head's mean cross-entropy (H,), class-weighted as `F.cross_entropy` weights its mean."""
    n, h, k = logits.shape
    losses = F.cross_entropy(logits.reshape(n * h, k), y.repeat_interleave(h), weight=weight, reduction="none")
    losses = losses.view(n, h)
    return losses.mean(0) if weight is None else losses.sum(0) / weight[y].sum()


class BestEpochs:
    """`BestEpoch` for stacked heads: each keeps its own best epoch and weights, and runs out of patience alone."""

    def __init__(self, params: dict[str, torch.Tensor], patience: int | None) -> None:
        n_heads = len(next(iter(params.values())))
        self.patience, self.state = patience, {name: p.detach().clone() for name, p in params.items()}
        self.score, self.value = np.full(n_heads, -np.inf), np.full(n_heads, np.nan)
        self.epoch, self.since_best = np.full(n_heads, -1), np.zeros(n_heads, dtype=int)
        self.last_epoch, self.active = np.zeros(n_heads, dtype=int), np.ones(n_heads, dtype=bool)

    def update(self, epoch: int, values: np.ndarray, params: dict[str, torch.Tensor]) -> None:
        """Record each still-active head's val value (history's val_metric); copy the weights of those that improved."""
        scores = as_scores(values)
        improved = self.active & ((scores > self.score) | (self.epoch < 0))
        self.since_best[self.active & ~improved] += 1
        self.since_best[improved] = 0
        self.score[improved], self.value[improved], self.epoch[improved] = scores[improved], values[improved], epoch
        if improved.any():
            index = torch.from_numpy(np.flatnonzero(improved))
            for name, p in params.items():
                self.state[name][index] = p.detach()[index]
        self.last_epoch[self.active] = epoch
        if self.patience is not None:
            self.active &= self.since_best < self.patience  # out of patience: the epoch where ProbeHead stops

    def should_stop(self) -> bool:
        """True once every head has run out of patience."""
        return not self.active.any()


@dataclass
class SweepState:
    """What the sweep's epochs update: stacked parameters, their optimiser, and the schedule's lr carrier."""

    params: dict[str, torch.Tensor]
    optimizer: StackedOptimizer
    carrier: torch.optim.Optimizer  # one dummy param group per head, whose lr the schedule moves
    schedule: torch.optim.lr_scheduler.LRScheduler


def _diverged(train_loss: np.ndarray, epoch: int, rows: list[dict], lrs: np.ndarray) -> None:
    """Every head diverged (one diverged head just loses the choice): one line for the head that lasted longest."""
    if np.isfinite(train_loss).any():
        return
    best = int(np.argmin(np.where(np.isfinite(rows[-1]["train_loss"]), 0, 1))) if rows else 0
    check_loss(float(train_loss[best]), epoch,
               [{"epoch": e, "train_loss": float(r["train_loss"][best])} for e, r in enumerate(rows, 1)],
               float(lrs[best]),
               "every head of the sweep diverged: drop --head-sweep and train one head with a lower --lr")


@dataclass(kw_only=True)
class HeadSweep(HeadTraining):
    """ProbeHead over a grid of lrs × weight decays, all heads trained in one pass; the best on val is kept.

    After fit: `module_` (the chosen head, a plain HeadModule), `best_epoch_`, `history_` (the chosen head's rows as
    ProbeHead writes them; `seconds` is the whole sweep's epoch), `choice_` and `table_` (one row per head).
    """

    # The sweep's own grid, not run options: TrainConfig has no field for them.
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3)
    weight_decays: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)

    def grid(self) -> list[tuple[float, float]]:
        """(lr, weight decay) of each head, lr-major: the order that breaks ties in the choice."""
        return list(itertools.product(self.lrs, self.weight_decays))

    def _start(self, template: HeadModule, grid: list[tuple[float, float]]) -> SweepState:
        """Every head a copy of ProbeHead's init, with its optimiser and the same schedule as ProbeHead's."""
        params = {name: p.detach().unsqueeze(0).repeat(len(grid), *(1,) * p.dim()).requires_grad_()
                  for name, p in template.net.named_parameters()}
        opt = StackedOptimizer(self.optimizer, list(params.values()), np.array([wd for _, wd in grid]))
        # One dummy param group per head carries the lr through build_schedule: the same schedule as ProbeHead's.
        carrier = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr, _ in grid])
        return SweepState(params, opt, carrier, build_schedule(self.schedule, carrier, self.epochs))

    def _epoch(self, state: SweepState, zt: torch.Tensor, yt: torch.Tensor, weight: torch.Tensor | None,
               generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One pass over the shuffled train features; returns (each head's lr, each head's mean train loss)."""
        lrs = np.array([g["lr"] for g in state.carrier.param_groups])
        order, total = torch.randperm(len(zt), generator=generator), torch.zeros(len(lrs), dtype=torch.float64)
        for batch in order.split(self.batch_size):
            loss = stacked_loss(stacked_logits(state.params, zt[batch], self.head), yt[batch], weight)
            state.optimizer.zero_grad()
            loss.sum().backward()  # heads are independent: the sum's gradient is each head's own
            state.optimizer.step(lrs)
            total += loss.detach().double() * len(batch)
        return lrs, (total / len(zt)).numpy()

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int) -> HeadSweep:
        """Train every head of the grid; keep each head's best val epoch, and the best head in `module_`."""
        grid = self.grid()
        # The same module as ProbeHead builds: every head starts from ProbeHead's init.
        template, (xt, yt), (xv, yv) = initial_head(x, y, x_val, y_val, n_classes, self.head, self.seed)
        self._template, self._n_classes = template, n_classes
        zt, zv = (xt - template.mean) / template.scale, (xv - template.mean) / template.scale  # as per batch
        state = self._start(template, grid)
        weight = class_weights(y, n_classes) if self.class_weights else None
        tracker, rows = BestEpochs(state.params, self.patience), []
        generator = torch.Generator().manual_seed(self.seed)
        for epoch in range(1, self.epochs + 1):
            start = time.perf_counter()
            epoch_lrs, train_loss = self._epoch(state, zt, yt, weight, generator)
            _diverged(train_loss, epoch, rows, np.array([lr for lr, _ in grid]))
            state.carrier.step()  # no gradients, so a no-op; it keeps the scheduler's step-order check quiet
            state.schedule.step()
            with torch.no_grad():
                logits = stacked_logits(state.params, zv, self.head)
                val_loss = stacked_loss(logits, yv, None).double().numpy()
                val_prob = logits.softmax(2).transpose(0, 1).numpy()
            values = selection_values(self.select, y_val, val_prob, val_loss)
            tracker.update(epoch, values, state.params)
            rows.append({"train_loss": train_loss, "val_loss": val_loss, "val_metric": values,
                         "lr": epoch_lrs, "seconds": time.perf_counter() - start})
            if tracker.should_stop():
                break
        self._choose(tracker, rows, grid)
        return self

    def _choose(self, tracker: BestEpochs, rows: list[dict], grid: list[tuple[float, float]]) -> None:
        """Keep the best head on val (the first on ties), its history, and the table of every head."""
        self._best = tracker.state
        chosen = int(np.argmax(tracker.score))
        self.table_ = [{"lr": float(lr), "weight_decay": float(wd), "best_epoch": int(e), "val_score": float(v)}
                       for (lr, wd), e, v in zip(grid, tracker.epoch, tracker.value, strict=True)]
        self.choice_ = {"head": chosen, **self.table_[chosen]}
        # The chosen head's rows, up to where ProbeHead with its lr and weight decay would have stopped.
        self.history_ = [{"epoch": epoch, "train_loss": float(row["train_loss"][chosen]),
                          "val_loss": float(row["val_loss"][chosen]), "val_metric": float(row["val_metric"][chosen]),
                          "lr": float(row["lr"][chosen]), "seconds": row["seconds"]}
                         for epoch, row in enumerate(rows[:tracker.last_epoch[chosen]], start=1)]
        self.best_epoch_ = int(tracker.epoch[chosen])
        self.module_ = self.head_module(chosen)

    def head_module(self, index: int) -> HeadModule:
        """Head `index` of the grid with its best-epoch weights, as a plain HeadModule (what ProbeHead keeps)."""
        module = HeadModule(len(self._template.mean), self._n_classes, self.head)
        state = {"mean": self._template.mean, "scale": self._template.scale}
        state |= {f"net.{name}": p[index].clone() for name, p in self._best.items()}
        module.load_state_dict(state)
        return module.eval()

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, K) from the chosen head's best epoch."""
        return self.module_(torch.as_tensor(np.asarray(x, dtype=np.float32))).softmax(1).numpy()

    def selection(self) -> dict | None:
        """The chosen head and every (lr, weight decay) head of the grid, for metrics.json's head_selection."""
        return {**self.choice_, "candidates": self.table_}
