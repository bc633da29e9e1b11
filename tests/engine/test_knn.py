"""The kNN probe: DINOv2's temperature-weighted vote, one neighbour search for all k, k chosen on val."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from medtransfer.engine.knn import KNNModule, KNNProbe
from medtransfer.evaluation.metrics import auroc

from helpers import default_settings


def knn(**given) -> KNNProbe:
    """A KNNProbe with the run defaults, except `given`."""
    return default_settings(KNNProbe, **given)


CLOSE = {"rtol": 1e-4, "atol": 1e-12}  # atol: a class without votes is clamped to float32's tiny, not 0


def weighted_vote(train: np.ndarray, labels: np.ndarray, query: np.ndarray, k: int, n_classes: int,
                  temperature: float = 0.07) -> np.ndarray:
    """The vote written out plainly: cosine similarity, top k, exp(s / T) weights summed per class."""
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    shares = []
    for q in query:
        sims = unit @ (q / np.linalg.norm(q))
        top = np.argsort(-sims)[:k]
        votes = np.zeros(n_classes)
        np.add.at(votes, labels[top], np.exp(sims[top] / temperature))
        shares.append(votes / votes.sum())
    return np.array(shares)


def directions(n: int, dim: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return (rng.normal(0, 1, (k, dim))[y] + rng.normal(0, 1.2, (n, dim))).astype(np.float32), y


def test_two_dimensional_case_by_hand():
    train = np.array([[1.0, 0.0], [0.9, 0.3], [0.0, 1.0], [-1.0, 0.2], [0.6, 0.8]], dtype=np.float32)
    labels = np.array([0, 1, 1, 0, 2])
    query = np.array([[1.0, 0.1], [0.1, 1.0], [-1.0, -1.0]], dtype=np.float32)
    probe = knn(ks=(3,)).fit(train, labels, query, np.array([0, 1, 0]), 3)
    # Query 0 by hand: neighbours 0, 1, 4 (cosines 0.995, 0.987, 0.697): classes 0, 1 and a nearly silent 2.
    cos = [1.0 / np.sqrt(1.01), (0.9 + 0.03) / np.sqrt(1.01 * 0.9), (0.6 + 0.08) / np.sqrt(1.01)]
    weights = np.exp(np.array(cos) / 0.07)
    np.testing.assert_allclose(probe.predict_proba(query[:1])[0], weights / weights.sum(), **CLOSE)
    np.testing.assert_allclose(probe.predict_proba(query), weighted_vote(train, labels, query, 3, 3), **CLOSE)
    assert probe.best_epoch_ == 3 and probe.history_[0]["k"] == 3


def test_prefix_of_one_search_equals_a_search_per_k():
    x, y = directions(300, 16, 3, seed=0)
    module = KNNModule.from_features(torch.as_tensor(x[:200]), torch.as_tensor(y[:200]), 3)
    query = torch.as_tensor(x[200:])
    sims, index = module.neighbours(query, 50)
    assert sims.shape == (100, 50) and bool((sims[:, :-1] >= sims[:, 1:]).all())
    for k in (1, 5, 20, 50):
        alone = module.vote(*module.neighbours(query, k), k)
        torch.testing.assert_close(module.vote(sims, index, k), alone, rtol=0, atol=0)
        np.testing.assert_allclose(alone.numpy(), weighted_vote(x[:200], y[:200], x[200:], k, 3), **CLOSE)


def test_history_scores_each_k_as_its_own_model():
    x, y = directions(360, 16, 3, seed=1)
    probe = knn(ks=(5, 15, 40)).fit(x[:200], y[:200], x[200:280], y[200:280], 3)
    for row in probe.history_:
        own = KNNModule.from_features(torch.as_tensor(x[:200]), torch.as_tensor(y[:200]), 3, k=row["k"])
        shares = own(torch.as_tensor(x[200:280])).softmax(1).numpy()
        assert row["val_metric"] == pytest.approx(auroc(y[200:280], shares), abs=1e-9)
    assert len({row["val_metric"] for row in probe.history_}) > 1


@pytest.mark.parametrize("block", [200, 450, 4000])  # 1, 2 and 20 queries per chunk
def test_chunked_search_equals_one_block(block):
    x, y = directions(260, 8, 2, seed=2)
    module = KNNModule.from_features(torch.as_tensor(x[:200]), torch.as_tensor(y[:200]), 2)
    whole_sims, whole_index = module.neighbours(torch.as_tensor(x[200:]), 7)
    sims, index = module.neighbours(torch.as_tensor(x[200:]), 7, block=block)
    # Similarities are float reductions: close, not bit-equal, whatever the blocking. The neighbours are the same.
    torch.testing.assert_close(sims, whole_sims, rtol=0, atol=1e-6)
    assert torch.equal(index, whole_index)
    unit = module.bank.double().numpy()
    query = x[200:].astype(np.float64) / np.linalg.norm(x[200:].astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(sims.numpy(), np.take_along_axis(query @ unit.T, index.numpy(), 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("block", [20, 60, 4000])
def test_equal_similarities_go_to_the_lowest_index(block):
    rng = np.random.default_rng(8)
    u, w = rng.normal(0, 1, (2, 32))
    # Duplicate train images: 10 copies of u and 10 of w, interleaved with 20 others, shuffled into the bank.
    bank = np.concatenate([np.tile(u, (10, 1)), np.tile(w, (10, 1)), rng.normal(0, 1, (20, 32))])
    labels = np.arange(40) % 2
    perm = rng.permutation(40)
    bank, labels = bank[perm].astype(np.float32), labels[perm]
    module = KNNModule.from_features(torch.as_tensor(bank), torch.as_tensor(labels), 2)
    query = torch.as_tensor(np.stack([u + 0.8 * w, w + 0.8 * u, u, u]).astype(np.float32))
    sims, index = module.neighbours(query, 13, block=block)
    at_u, at_w = np.flatnonzero(perm < 10), np.flatnonzero((perm >= 10) & (perm < 20))
    # The first 10 are the copies nearest the query in bank order; the k boundary cuts the next 10 copies at 3.
    assert index[0].tolist() == at_u.tolist() + at_w[:3].tolist()
    assert index[1].tolist() == at_w.tolist() + at_u[:3].tolist()
    assert index[2].tolist()[:10] == at_u.tolist() and torch.equal(index[2], index[3])
    assert bool((sims[:, :-1] >= sims[:, 1:]).all())
    assert len(set(sims[0, :10].tolist())) == 1  # really tied, so only the index rule orders them


def test_k_is_capped_at_the_train_size():
    x, y = directions(40, 6, 2, seed=3)
    probe = knn(ks=(3, 20, 50)).fit(x[:8], y[:8], x[8:], y[8:], 2)
    assert [row["k"] for row in probe.history_] == [3, 8, 8]
    probe.module_.k.fill_(8)
    np.testing.assert_allclose(probe.predict_proba(x[8:]), weighted_vote(x[:8], y[:8], x[8:], 8, 2), **CLOSE)


def ring(angle: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at `angle` radians from (1, 0, 0), spread around it."""
    phi = rng.uniform(0, 2 * np.pi, n)
    return np.stack([np.full(n, np.cos(angle)), np.sin(angle) * np.cos(phi), np.sin(angle) * np.sin(phi)], 1)


def test_small_k_wins_when_a_class_is_a_few_close_points():
    rng = np.random.default_rng(4)
    # Class 1: 3 points close to (1, 0, 0); class 0: a ring of 47 a little further out, and 30 on the far side.
    train = np.concatenate([ring(0.1, 3, rng), ring(0.3, 47, rng), -ring(0.2, 30, rng)]).astype(np.float32)
    labels = np.array([1] * 3 + [0] * 77)
    val = np.concatenate([ring(0.02, 10, rng), -ring(0.1, 10, rng)]).astype(np.float32)
    y_val = np.array([1] * 10 + [0] * 10)
    probe = knn(ks=(50, 3, 20), select="val_accuracy").fit(train, labels, val, y_val, 2)
    accuracy = {row["k"]: row["val_metric"] for row in probe.history_}
    assert accuracy[3] == 1.0 and accuracy[50] == 0.5
    assert probe.choice_["k"] == 3 and int(probe.module_.k) == 3 and probe.best_epoch_ == 3
    assert (probe.predict_proba(val).argmax(1) == y_val).all()


def test_large_k_wins_on_noisy_labels():
    rng = np.random.default_rng(5)
    x, y = directions(600, 8, 2, seed=5)
    noisy = np.where(rng.random(400) < 0.35, 1 - y[:400], y[:400])
    probe = knn(ks=(1, 100), select="val_accuracy").fit(x[:400], noisy, x[400:], y[400:], 2)
    accuracy = [row["val_metric"] for row in probe.history_]
    assert accuracy[1] > accuracy[0] + 0.1
    assert probe.choice_ == {"k": 100, "temperature": 0.07, "val_score": accuracy[1]}


def test_ties_go_to_the_first_k():
    rng = np.random.default_rng(6)
    y = np.arange(100) % 2
    x = (np.eye(4)[y] + rng.normal(0, 0.05, (100, 4))).astype(np.float32)  # every k classifies all of val
    probe = knn(ks=(20, 10), select="val_accuracy").fit(x[:60], y[:60], x[60:], y[60:], 2)
    assert [row["val_metric"] for row in probe.history_] == [1.0, 1.0]
    assert probe.choice_["k"] == 20


@pytest.mark.parametrize("bank_dtype", ["float32", "float16"])
def test_safetensors_round_trip_gives_the_same_probabilities(bank_dtype, tmp_path):
    x, y = directions(300, 16, 4, seed=7)
    probe = knn(ks=(5, 25), bank_dtype=bank_dtype).fit(x[:200], y[:200], x[200:250], y[200:250], 4)
    save_file(probe.module_.state_dict(), tmp_path / "knn.safetensors")
    state = load_file(tmp_path / "knn.safetensors")
    assert state["bank"].dtype == getattr(torch, bank_dtype) and state["bank"].shape == (200, 16)
    module = KNNModule.from_state_dict(state)
    assert int(module.k) == probe.choice_["k"]
    with torch.no_grad():
        again = module(torch.as_tensor(x[250:])).softmax(1).numpy()
    np.testing.assert_array_equal(again, probe.predict_proba(x[250:]))


def test_forward_gives_finite_log_shares():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)
    module = KNNModule.from_features(torch.as_tensor(train), torch.tensor([0, 1, 0]), 3, k=2)
    logp = module(torch.tensor([[1.0, 0.1], [0.1, 1.0]]))
    assert torch.isfinite(logp).all()  # class 2 has no votes, yet no -inf
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(2))
    torch.testing.assert_close(logp.softmax(1), logp.exp())
    assert logp.argmax(1).tolist() == [0, 1]


def test_non_finite_features_are_refused():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    module = KNNModule.from_features(train, torch.tensor([0, 1]), 2, k=1)
    with pytest.raises(ValueError, match="NaN"):
        module(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        KNNModule.from_features(torch.tensor([[float("inf"), 0.0]]), torch.tensor([0]), 2)
