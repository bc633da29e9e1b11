"""Probe heads on fixed features: they learn, pick the best val epoch, and are seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.engine.heads import HeadModule, ProbeHead, class_weights

from helpers import default_settings


def probe(**given) -> ProbeHead:
    """A ProbeHead with the run defaults, except `given`."""
    return default_settings(ProbeHead, **given)


def blobs(n: int, dim: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, dim))
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(0, 1.0, (n, dim))).astype(np.float32) * 50 + 7, y


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_head_learns_separable_features(kind):
    x, y = blobs(400, 16, 3, 0)
    head = probe(head=kind, epochs=40, lr=1e-2, batch_size=64).fit(x[:300], y[:300], x[300:], y[300:], 3)
    prob = head.predict_proba(x[300:])
    assert prob.shape == (100, 3) and np.allclose(prob.sum(1), 1, atol=1e-5)
    assert (prob.argmax(1) == y[300:]).mean() > 0.8
    assert 1 <= head.best_epoch_ <= 40 and len(head.history_) == 40


def test_mlp_head_is_the_paper_shape():
    module = HeadModule(768, 3, "mlp")
    layers = list(module.net)
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear"]
    assert layers[0].out_features == 256 and layers[2].out_features == 3


def test_best_epoch_weights_are_kept():
    """The stored weights reproduce the best epoch's val loss when selecting by val loss."""
    x, y = blobs(300, 8, 2, 1)
    head = probe(epochs=30, lr=0.3, select="val_loss", batch_size=32).fit(x[:200], y[:200], x[200:], y[200:], 2)
    best = min(h["val_loss"] for h in head.history_)
    logits = head.module_(torch.as_tensor(x[200:]))
    loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(y[200:])).item()
    assert loss == pytest.approx(best, rel=1e-5)
    assert head.history_[head.best_epoch_ - 1]["val_loss"] == pytest.approx(best)


def test_patience_stops_early():
    x, y = blobs(200, 8, 2, 2)
    head = probe(epochs=200, lr=1e-2, patience=3).fit(x[:150], y[:150], x[150:], y[150:], 2)
    assert len(head.history_) < 200
    assert len(head.history_) - head.best_epoch_ == 3


def test_seeded_fit_is_reproducible():
    x, y = blobs(200, 8, 2, 3)
    a = probe(epochs=5, seed=1).fit(x[:150], y[:150], x[150:], y[150:], 2).predict_proba(x)
    b = probe(epochs=5, seed=1).fit(x[:150], y[:150], x[150:], y[150:], 2).predict_proba(x)
    c = probe(epochs=5, seed=2).fit(x[:150], y[:150], x[150:], y[150:], 2).predict_proba(x)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_class_weights_are_inverse_frequency():
    w = class_weights(np.array([0, 0, 0, 1]), 3).numpy()
    assert w[1] == pytest.approx(3 * w[0]) and w[2] == 0


def test_a_diverging_head_stops_with_the_epoch_and_the_fix():
    from medtransfer.errors import UserError

    x, y = blobs(200, 8, 2, 0)
    with pytest.raises(UserError) as err:
        probe(head="mlp", epochs=5, lr=1e20, batch_size=64).fit(x[:150], y[:150], x[150:], y[150:], 2)
    line = err.value.line()
    assert "diverged" in line and "epoch 1" in line and "lower --lr, e.g. --lr 1e+19" in line


def test_check_loss_names_the_last_finite_loss():
    from medtransfer.engine.heads import check_loss
    from medtransfer.errors import UserError

    history = [{"epoch": 1, "train_loss": 0.69}, {"epoch": 2, "train_loss": 0.4123}]
    check_loss(0.3, 3, history, 1e-3)  # finite: nothing happens
    with pytest.raises(UserError, match=r"became inf in epoch 3 \(last finite loss 0.4123 in epoch 2\)"):
        check_loss(float("inf"), 3, history, 1e-3)


def test_nan_features_are_refused_before_training():
    from medtransfer.errors import UserError

    x, y = blobs(100, 8, 2, 0)
    x[[3, 90], 2] = np.nan  # one train row, one val row
    with pytest.raises(UserError, match="train features: 1 of 80 rows hold NaN"):
        probe(epochs=2).fit(x[:80], y[:80], x[80:], y[80:], 2)
