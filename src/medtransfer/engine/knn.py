"""Weighted k-nearest-neighbour probe on cached features, as DINOv2's kNN evaluation: no training, k chosen on val."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medtransfer.evaluation.selection import as_scores, selection_values

TEMPERATURE = 0.07  # DINOv2's
MAX_BLOCK = 2**24  # similarities per chunk of queries (128 MiB in float64): bounds memory for big sets
BANK_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def log_shares(shares: torch.Tensor) -> torch.Tensor:
    """Log of vote shares, clamped so a class without votes gets a finite (very negative) value, not -inf."""
    return shares.clamp_min(torch.finfo(shares.dtype).tiny).log()


def top_k(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of each row (finite values) and their indices, by value descending, then index ascending."""
    # torch.topk leaves open which of equal values it keeps and in what order. Where the k-th value is shared beyond
    # the k picked (duplicate train images, say), keep all above it and the lowest-indexed of those equal to it.
    values, index = sims.topk(min(k + 1, sims.shape[1]), dim=1)
    crowded = (values[:, k] == values[:, k - 1]).nonzero()[:, 0] if values.shape[1] > k else index[:0, 0]
    index = index[:, :k]
    if len(crowded):
        rows, edge = sims[crowded], values[crowded, k - 1:k]
        above, tied = rows > edge, rows == edge
        chosen = above | (tied & (tied.cumsum(1) <= k - above.sum(1, keepdim=True)))
        index[crowded] = chosen.nonzero()[:, 1].view(len(crowded), k)
    index = index.sort(dim=1).values
    values = sims.gather(1, index)
    order = values.argsort(dim=1, descending=True, stable=True)  # stable: equal values keep index order
    return values.gather(1, order), index.gather(1, order)


class KNNModule(nn.Module):
    """The L2-normalised train bank and its labels; forward gives the log vote shares of the k nearest (cosine)."""

    def __init__(self, n_train: int, dim: int, n_classes: int, k: int = 20, temperature: float = TEMPERATURE,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        # All buffers, so state_dict (and a safetensors file of it) holds everything needed to predict.
        self.register_buffer("bank", torch.zeros(n_train, dim, dtype=dtype))
        self.register_buffer("labels", torch.zeros(n_train, dtype=torch.long))
        self.register_buffer("n_classes", torch.tensor(n_classes))
        self.register_buffer("k", torch.tensor(k))
        self.register_buffer("temperature", torch.tensor(temperature, dtype=torch.float32))

    @classmethod
    def from_features(cls, x: torch.Tensor, y: torch.Tensor, n_classes: int, k: int = 20,
                      temperature: float = TEMPERATURE, dtype: torch.dtype = torch.float32) -> KNNModule:
        """A bank of the normalised train features x (n, D) with labels y."""
        if not bool(torch.isfinite(x).all()):
            raise ValueError("kNN: the train features hold NaN or infinite values")
        module = cls(x.shape[0], x.shape[1], n_classes, k, temperature, dtype)
        module.bank.copy_(F.normalize(x.float(), dim=1))
        module.labels.copy_(y)
        return module

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> KNNModule:
        """Rebuild from a saved state_dict (e.g. `safetensors.torch.load_file`), its shapes giving the sizes."""
        module = cls(*state["bank"].shape, int(state["n_classes"]), int(state["k"]), float(state["temperature"]),
                     state["bank"].dtype)
        module.load_state_dict(state)
        return module

    @torch.no_grad()
    def neighbours(self, features: torch.Tensor, k: int, block: int = MAX_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities and bank indices (n, min(k, n_train)) of the nearest train features, most similar first."""
        # float64 dot products of float32 vectors (each product exact), rounded once to float32: blocking and threads
        # move the float64 sum by ~1e-16, so the float32 similarity, and the neighbour order, practically never
        # depend on them (a float32 matmul's do, by ~1e-7); top_k then orders equal similarities by index.
        query = F.normalize(features.float(), dim=1).double()
        if not bool(torch.isfinite(query).all()):
            raise ValueError("kNN: the features hold NaN or infinite values")
        bank = self.bank.double()
        k = min(k, len(bank))
        if len(query) == 0 or k == 0:
            return query.new_zeros(len(query), k, dtype=torch.float32), torch.zeros(len(query), k, dtype=torch.long)
        rows = max(1, block // max(len(bank), 1))
        found = [top_k((chunk @ bank.T).float(), k) for chunk in query.split(rows)]
        return torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found])

    @torch.no_grad()
    def vote(self, sims: torch.Tensor, index: torch.Tensor, k: int) -> torch.Tensor:
        """Vote shares (n, K) of the first k neighbours, each weighted by exp(similarity / T)."""
        k = min(k, sims.shape[1])
        # Shifting by the top similarity leaves the shares unchanged and keeps exp finite for a small T.
        weights = ((sims[:, :k] - sims[:, :1]) / self.temperature).exp()
        votes = sims.new_zeros(len(sims), int(self.n_classes)).scatter_add_(1, self.labels[index[:, :k]], weights)
        return votes / votes.sum(1, keepdim=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Log vote shares (n, K): `.softmax(1)` gives the shares back."""
        k = int(self.k)
        return log_shares(self.vote(*self.neighbours(features, k), k))


@dataclass(kw_only=True)
class KNNProbe:
    """Weighted kNN on fixed features (sklearn-style estimator); k chosen on val by the selection metric."""

    select: str  # TrainConfig's, which holds its default
    # The probe's own settings, not run options: TrainConfig has no field for them.
    ks: tuple[int, ...] = (10, 20, 50)
    temperature: float = TEMPERATURE
    bank_dtype: str = "float32"  # "float16" halves the saved bank; similarities are still computed in float32

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int) -> KNNProbe:
        """Store the train bank; score every k on val from one search (each k is a prefix of the top max(k))."""
        xt, yt = torch.as_tensor(np.asarray(x, dtype=np.float32)), torch.as_tensor(y, dtype=torch.long)
        xv, yv = torch.as_tensor(np.asarray(x_val, dtype=np.float32)), torch.as_tensor(y_val, dtype=torch.long)
        ks = [min(k, len(xt)) for k in self.ks]  # capped at n_train, so history says which k really ran
        module = KNNModule.from_features(xt, yt, n_classes, max(ks), self.temperature, BANK_DTYPES[self.bank_dtype])
        sims, index = module.neighbours(xv, max(ks))
        shares = torch.stack([module.vote(sims, index, k) for k in ks])
        losses = np.array([F.nll_loss(log_shares(s), yv).item() for s in shares])
        values = selection_values(self.select, y_val, shares.numpy(), losses)
        best = int(np.argmax(as_scores(values)))  # the first k on ties
        module.k.fill_(ks[best])
        self.history_ = [{"k": k, "val_loss": float(loss), "val_metric": float(value)}
                         for k, loss, value in zip(ks, losses, values, strict=True)]
        # There are no epochs: best_epoch_ holds the chosen k, so code reading a head's best_epoch_ still works.
        self.best_epoch_ = ks[best]
        self.choice_ = {"k": ks[best], "temperature": self.temperature, "val_score": float(values[best])}
        self.module_ = module.eval()
        return self

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Vote shares (n, K) with the chosen k."""
        return self.module_(torch.as_tensor(np.asarray(x, dtype=np.float32))).softmax(1).numpy()

    def selection(self) -> dict | None:
        """The chosen k and every k tried, for metrics.json's head_selection."""
        return {**self.choice_, "candidates": self.history_}
