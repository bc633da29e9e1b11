"""A head sweep trains its grid together, and each of its heads is the ProbeHead trained alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from medtransfer.engine.heads import HeadModule, ProbeHead
from medtransfer.engine.sweep import HeadSweep
from medtransfer.evaluation.metrics import auroc

from helpers import default_settings


def sweep_of(**given) -> HeadSweep:
    """A HeadSweep with the run defaults, except `given`."""
    return default_settings(HeadSweep, **given)


def blobs(n: int, dim: int, k: int, seed: int, spread: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, dim))
    y = rng.integers(0, k, n)
    # Overlapping classes, so val scores keep moving and the best epoch is not simply the first.
    return (centres[y] + rng.normal(0, spread, (n, dim))).astype(np.float32) * 20 + 3, y


def split(x: np.ndarray, y: np.ndarray) -> tuple[tuple, np.ndarray, np.ndarray]:
    return (x[:160], y[:160], x[160:220], y[160:220]), x[220:], y[220:]


def probabilities(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.as_tensor(x)).softmax(1).numpy()


CASES = [  # kind, optimizer, classes, schedule, select, patience, balance
    ("linear", "adam", 2, "none", "val_auroc", None, False),
    ("linear", "adamw", 3, "cosine", "val_auroc", None, True),
    ("linear", "sgd", 2, "step", "val_loss", None, False),
    ("mlp", "adam", 3, "none", "val_accuracy", None, False),
    ("mlp", "adamw", 2, "cosine", "val_auroc", 4, False),
    ("linear", "adam", 3, "none", "val_loss", 3, True),
]


@pytest.mark.parametrize(("kind", "optimizer", "k", "schedule", "select", "patience", "balance"), CASES)
def test_each_head_is_the_probe_head_trained_alone(kind, optimizer, k, schedule, select, patience, balance):
    x, y = blobs(280, 12, k, seed=k)
    data, x_test, _ = split(x, y)
    common = dict(head=kind, epochs=25, batch_size=48, optimizer=optimizer, schedule=schedule, select=select,
                  patience=patience, class_weights=balance, seed=5)
    lrs = (3e-3, 3e-2) if kind == "linear" else (3e-4, 3e-3)
    sweep = HeadSweep(lrs=lrs, weight_decays=(0.0, 0.1), **common).fit(*data, k)
    assert len(sweep.table_) == 4
    best_epochs, test_probs = set(), []
    for i, (lr, wd) in enumerate(sweep.grid()):
        alone = ProbeHead(lr=lr, weight_decay=wd, **common).fit(*data, k)
        row = sweep.table_[i]
        assert (row["lr"], row["weight_decay"]) == (lr, wd)
        assert row["best_epoch"] == alone.best_epoch_
        assert row["val_score"] == pytest.approx(alone.history_[alone.best_epoch_ - 1]["val_metric"], abs=1e-5)
        head = sweep.head_module(i)
        for features in (data[2], x_test):
            np.testing.assert_allclose(probabilities(head, features), alone.predict_proba(features), atol=1e-4)
        if i == sweep.choice_["head"]:
            assert len(sweep.history_) == len(alone.history_)  # patience cuts the chosen head's history alike
            for mine, theirs in zip(sweep.history_, alone.history_, strict=True):
                assert mine["epoch"] == theirs["epoch"] and mine["lr"] == pytest.approx(theirs["lr"])
                for key in ("train_loss", "val_loss", "val_metric"):
                    assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5)
        best_epochs.add(alone.best_epoch_)
        test_probs.append(alone.predict_proba(x_test))
    # The comparison means little if the heads were interchangeable or all stopped improving at once.
    assert min(np.abs(a - b).max() for i, a in enumerate(test_probs) for b in test_probs[:i]) > 1e-3
    assert len(best_epochs) > 1


def test_the_best_head_on_val_is_chosen():
    x, y = blobs(280, 12, 2, seed=0)
    data, x_test, _ = split(x, y)
    sweep = sweep_of(epochs=20, batch_size=64, lrs=(1e-4, 1e-2), weight_decays=(0.0, 1.0)).fit(*data, 2)
    scores = [row["val_score"] for row in sweep.table_]
    chosen = sweep.choice_["head"]
    assert chosen == int(np.argmax(scores)) and sweep.choice_["val_score"] == max(scores)
    assert len(set(scores)) > 1
    assert (sweep.choice_["lr"], sweep.choice_["weight_decay"]) == sweep.grid()[chosen]
    assert sweep.best_epoch_ == sweep.table_[chosen]["best_epoch"]
    # The chosen head's stored weights give the val AUROC it was chosen for.
    assert auroc(data[3], sweep.predict_proba(data[2])) == pytest.approx(sweep.choice_["val_score"], abs=1e-9)
    np.testing.assert_array_equal(sweep.predict_proba(x_test), probabilities(sweep.head_module(chosen), x_test))


def test_ties_go_to_the_first_head_in_grid_order():
    x, y = blobs(280, 12, 2, seed=1)
    data, _, _ = split(x, y)
    # Identical heads score identically: the first must win.
    sweep = sweep_of(epochs=10, lrs=(1e-2, 1e-2), weight_decays=(0.0,)).fit(*data, 2)
    assert sweep.table_[0] == sweep.table_[1]
    assert sweep.choice_["head"] == 0


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_module_state_loads_into_a_plain_head_module(kind, tmp_path):
    x, y = blobs(280, 12, 3, seed=2)
    data, x_test, _ = split(x, y)
    sweep = sweep_of(head=kind, epochs=5, lrs=(1e-3, 1e-2), weight_decays=(0.0,)).fit(*data, 3)
    save_file(sweep.module_.state_dict(), tmp_path / "head.safetensors")
    module = HeadModule(12, 3, kind)
    module.load_state_dict(load_file(tmp_path / "head.safetensors"))
    np.testing.assert_array_equal(probabilities(module.eval(), x_test), sweep.predict_proba(x_test))


def test_default_grid_is_sixteen_heads_lr_major():
    grid = sweep_of().grid()
    assert len(grid) == 16 and grid[:2] == [(1e-4, 0.0), (1e-4, 1e-4)] and grid[-1] == (3e-3, 1e-2)


def test_a_diverged_head_loses_the_choice_and_all_diverged_is_one_line():
    from medtransfer.errors import UserError

    x, y = blobs(300, 8, 2, 0)
    (train, _, _) = split(x, y)
    sweep = sweep_of(head="mlp", epochs=4, batch_size=64, lrs=(1e-3, 1e20), weight_decays=(0.0,)).fit(*train, 2)
    assert sweep.choice_["lr"] == 1e-3  # the finite head is chosen; the other diverged
    assert np.isfinite(sweep.predict_proba(x[220:])).all()
    with pytest.raises(UserError, match="every head of the sweep diverged") as err:
        sweep_of(head="mlp", epochs=4, batch_size=64, lrs=(1e20, 1e21), weight_decays=(0.0,)).fit(*train, 2)
    assert "epoch 1" in err.value.line()
