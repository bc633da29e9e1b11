"""The fine-tune step: gradient accumulation equals the large batch; compiled and eager steps agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.engine.finetune import Step, train_epoch
from medtransfer.engine.pipeline import InputPipeline
from medtransfer.models.backbone import Preprocess

PRE = Preprocess(8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear", 1.0)


def _data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    return (torch.from_numpy(rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)),
            torch.from_numpy(rng.integers(0, 3, n)))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.Tanh(), nn.Linear(16, 3))  # no batch statistics


def _train(model: nn.Module, batch: int, accumulate: int, compiled: bool = False) -> float:
    images, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = Step(torch.compile(model) if compiled else model, opt, torch.amp.GradScaler("cuda", enabled=False),
                None, accumulate)
    batches = [(images[i:i + batch], y[i:i + batch], torch.arange(i, i + batch)) for i in range(0, 32, batch)]
    loss, seen = train_epoch(model, step, batches, InputPipeline(PRE, torch.device("cpu")))
    assert seen == 32
    return loss


def test_accumulating_two_half_batches_equals_one_full_batch():
    big, small = _model(), _model()
    loss_big = _train(big, 16, 1)
    loss_small = _train(small, 8, 2)
    for a, b in zip(big.parameters(), small.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(next(_model().parameters()), next(big.parameters()))  # it did train
    # The reported loss is the mean over the same samples before each update, so it matches too.
    assert loss_big == pytest.approx(loss_small, rel=1e-6)


def test_an_epoch_ending_mid_window_still_applies_its_gradients():
    model, untouched = _model(), _model()
    _train(model, 8, 3)  # 4 batches: one step after 3, one for the last batch
    images, y = _data()
    opt = torch.optim.SGD(untouched.parameters(), lr=0.1)
    for chunk in (slice(0, 24), slice(24, 32)):
        opt.zero_grad()
        x = InputPipeline(PRE, torch.device("cpu"))(images[chunk])
        losses = [nn.functional.cross_entropy(untouched(x[i:i + 8]), y[chunk][i:i + 8]) for i in range(0, len(x), 8)]
        (sum(losses) / 3).backward()
        opt.step()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(model.parameters(), untouched.parameters()))


@pytest.mark.slow
def test_compiled_step_trains_like_the_eager_one():
    eager, compiled = _model(), _model()
    _train(eager, 8, 1)
    _train(compiled, 8, 1, compiled=True)
    for a, b in zip(eager.parameters(), compiled.parameters()):
        assert torch.allclose(a, b, atol=1e-4)


def test_a_nan_loss_stops_finetuning_with_the_epoch_the_last_loss_and_the_fix(monkeypatch):
    from types import SimpleNamespace

    import pandas as pd

    import medtransfer.engine.finetune as ft
    from medtransfer.errors import UserError

    losses = iter([0.7, 0.6, float("nan"), 0.5])
    monkeypatch.setattr(ft, "train_epoch", lambda *a, **k: (next(losses), 32))
    val_calls = []

    def predict(model, data, rows, batch_size):
        val_calls.append(1)
        return np.full((len(rows), 3), 1 / 3, dtype=np.float32), 1.1

    monkeypatch.setattr(ft, "predict_rows", predict)
    table = SimpleNamespace(frame=pd.DataFrame({"target": np.arange(40) % 3}), classes=["a", "b", "c"])
    data = SimpleNamespace(device=torch.device("cpu"), table=table, pre=PRE, loader=lambda *a, **k: [])
    settings = ft.FinetuneSettings(epochs=10, lr=1e-4, weight_decay=0.0, batch_size=8, optimizer="adam",
                                   schedule="none", select="val_loss", patience=None, class_weights=False,
                                   augment=False, seed=0, accumulate=1, compile=False)
    with pytest.raises(UserError) as err:
        ft.finetune(_model(), data, np.arange(30), np.arange(30, 40), settings)
    line = err.value.line()
    assert "became nan in epoch 3 (last finite loss 0.6 in epoch 2)" in line and "--lr 1e-05" in line
    assert len(val_calls) == 2  # stopped before scoring the diverged epoch on val (sklearn refuses NaN)
