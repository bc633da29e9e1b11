"""One run end to end on real and synthetic data: files, cache reuse, determinism, leakage."""

from __future__ import annotations

import json
import re
from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import save_file

from medtransfer.config import parse_config
from medtransfer.evaluation.metric_registry import METRICS
from medtransfer.runner import train


def run(tmp_path, name, reporter=None, **values):
    values.setdefault("cache_dir", str(tmp_path / "cache"))
    values.setdefault("bootstrap", 200)
    values.setdefault("workers", 0)
    return train(parse_config({"out": str(tmp_path / name), **values}), reporter)


def test_frozen_run_writes_the_contract(tmp_path):
    outcome = run(tmp_path, "r", data="synthetic:n=120,size=24,groups=40,classes=3", backbone="resnet18",
                  weights="none", image_size=32, epochs=5)
    d = outcome.run_dir.path
    assert sorted(p.name for p in d.iterdir()) == ["DONE", "config.yaml", "environment.json", "head.safetensors",
                                                   "history.csv", "metrics.json", "patient_predictions.csv",
                                                   "predictions.csv", "train.log"]
    m = json.loads((d / "metrics.json").read_text())
    for split in ("val", "test"):
        # every metric of a 3-class nominal task: no binary operating point, no quadratic kappa
        binary_or_ordinal = {"auprc", "sensitivity", "specificity", "ppv", "npv", "calibration_slope",
                             "calibration_intercept", "kappa_quadratic"}
        assert set(m[split]) == set(METRICS) - binary_or_ordinal
        for entry in m[split].values():
            assert set(entry) == {"value", "low", "high"}
    assert m["bootstrap"] == {"n": 200, "level": 0.95, "unit": "group", "seed": 0}
    assert m["classes"] == ["class0", "class1", "class2"]
    preds = pd.read_csv(d / "predictions.csv")
    assert list(preds.columns) == ["sample_id", "group", "split", "label", "predicted",
                                   "prob_class0", "prob_class1", "prob_class2"]
    assert len(preds[preds.split == "test"]) == m["n_test"]
    assert np.allclose(preds.filter(like="prob_").sum(axis=1), 1, atol=1e-4)
    hist = pd.read_csv(d / "history.csv")
    assert list(hist.columns) == ["epoch", "train_loss", "val_loss", "val_metric", "lr", "seconds"]
    assert len(hist) == 5
    # Groups never cross splits: the test patients are not in val.
    assert not set(preds[preds.split == "test"].group) & set(preds[preds.split == "val"].group)
    # One pooled prediction per patient, with its own CI over patients.
    patients = pd.read_csv(d / "patient_predictions.csv")
    test_patients = preds[preds.split == "test"].group.nunique()
    assert m["patient"]["n_test"] == test_patients == (patients.split == "test").sum()
    assert m["patient"]["aggregation"] == "mean"
    assert set(m["patient"]["test"]) == set(METRICS) - binary_or_ordinal
    assert patients.groupby("split")["n_images"].sum()["test"] == m["n_test"]


def test_frozen_breastmnist_with_local_safetensors_reuses_the_cache(tmp_path, shared_data):
    ckpt = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(ckpt))
    settings = dict(data=str(shared_data / "medmnist" / "breastmnist_64.npz"), backbone="resnet18",
                    weights=str(ckpt), image_size=64, mode="frozen", epochs=30, bootstrap=500)
    first = run(tmp_path, "a", **settings)
    second = run(tmp_path, "b", **settings)
    t1, t2 = first.metrics.timing, second.metrics.timing
    assert not t1["cache_hit"] and t1["extract_seconds"] > 0
    assert t2["cache_hit"] and t2["extract_seconds"] == 0
    assert first.metrics.test == second.metrics.test
    auroc = first.metrics.test["auroc"]
    assert auroc.value > 0.5 and auroc.low < auroc.value < auroc.high
    assert first.metrics.n_test == 156


def test_ham10000_subset_splits_by_lesion(tmp_path, shared_data):
    outcome = run(tmp_path, "ham", data=str(shared_data / "ham10000_subset" / "subset_metadata.csv"),
                  backbone="resnet18", weights="none", image_size=32, epochs=3, test_fraction=0.3, val_fraction=0.3,
                  allow_missing_classes=True)
    # akiec has 2 lesions in the subset: it cannot reach train, val and test, and the run says so
    assert outcome.metrics.missing_classes == {"val": ["akiec"]}
    preds = pd.read_csv(outcome.run_dir.path / "predictions.csv")
    meta = pd.read_csv(shared_data / "ham10000_subset" / "subset_metadata.csv")
    assert outcome.metrics.bootstrap.unit == "group"
    lesion_split = preds.groupby("group")["split"].nunique()
    assert (lesion_split == 1).all()
    assert set(preds["group"]) <= set(meta["lesion_id"])
    assert outcome.metrics.n_train + outcome.metrics.n_val + outcome.metrics.n_test == len(meta)


@pytest.mark.slow
def test_ham10000_full_metadata_with_skip_missing(tmp_path, shared_data):
    outcome = run(tmp_path, "ham", data=str(shared_data / "ham10000_subset" / "HAM10000_metadata.csv"),
                  skip_missing=True, backbone="resnet18", weights="none", image_size=32, epochs=2,
                  test_fraction=0.3, val_fraction=0.3, allow_missing_classes=True)
    assert any("9891" in note for note in outcome.metrics.notes)
    assert outcome.metrics.n_train + outcome.metrics.n_val + outcome.metrics.n_test == 124


# --- What a run printed (train.log), what its listeners got (every history row) and where it came from ---

@pytest.mark.parametrize(("mode", "extra"), [("frozen", {"epochs": 25}), ("frozen", {"head": "knn"}),
                                             ("frozen", {"epochs": 4, "head_sweep": True}),
                                             ("finetune", {"epochs": 2, "batch_size": 16})])
def test_listeners_get_every_history_row_and_train_log_holds_what_was_printed(tmp_path, monkeypatch, mode, extra):
    from medtransfer.progress import Reporter

    monkeypatch.setattr("sys.argv", ["medtransfer", "train", "synthetic:n=60,size=16", "--seed", "3"])
    reporter, rows = Reporter(quiet=True), []  # quiet silences the terminal, not the record
    with reporter.listen(rows.append):
        outcome = run(tmp_path, "r", reporter, data="synthetic:n=60,size=16", backbone="resnet18", weights="none",
                      image_size=32, mode=mode, seed=3, **extra)
    d, best = outcome.run_dir.path, outcome.metrics.best_epoch
    history = pd.read_csv(d / "history.csv")
    pd.testing.assert_frame_equal(pd.DataFrame(rows), history, check_dtype=False)
    log = (d / "train.log").read_text()
    assert "\x1b" not in log and "95% CI" in log  # plain text, ending in the metrics table
    assert "synthetic:n=60,size=16: 60 samples" in log and "duplicates:" in log
    lines = log.splitlines()
    if "k" in history:
        # Every k tried, its numbers from history.csv (not from the log compared).
        expected = [f"k {k}: val loss {loss:.4f}, val_auroc {value:.4f}"
                    for k, loss, value in zip(history.k, history.val_loss, history.val_metric)]
        assert [line.split(" (")[0] for line in lines if line.startswith("k ")] == expected
        assert f"best k {best} (val_auroc " in log
    else:
        shown = [int(m.group(1)) for m in map(re.compile(r"epoch (\d+)/\d+: train loss").match, lines) if m]
        assert shown[0] == 1 and shown[-1] == len(history) and len(shown) <= 12
        assert f"best epoch {best} (val_auroc {history.val_metric[best - 1]:.4f})" in log
    env = json.loads((d / "environment.json").read_text())
    assert env["seed"] == 3 and env["command"] == ["medtransfer", "train", "synthetic:n=60,size=16", "--seed", "3"]
    assert env["device"].startswith("cpu") and env["packages"]["torch"] == version("torch")


def test_finetune_is_deterministic_per_seed(tmp_path):
    settings = dict(data="synthetic:n=96,size=24,groups=48", backbone="resnet18", weights="none", image_size=32,
                    mode="finetune", epochs=2, batch_size=16, lr=1e-3)
    a = run(tmp_path, "a", seed=0, **settings).metrics.test
    b = run(tmp_path, "b", seed=0, **settings).metrics.test
    c = run(tmp_path, "c", seed=1, **settings).metrics.test
    assert a == b
    assert a != c
    assert (tmp_path / "a" / "model.safetensors").is_file()


def test_train_fraction_keeps_a_grouped_share(tmp_path):
    full = run(tmp_path, "full", data="synthetic:n=200,size=16,groups=100", backbone="resnet18", weights="none",
               image_size=32, epochs=2)
    half = run(tmp_path, "half", data="synthetic:n=200,size=16,groups=100", backbone="resnet18", weights="none",
               image_size=32, epochs=2, train_fraction=0.5)
    assert half.metrics.n_test == full.metrics.n_test and half.metrics.n_val == full.metrics.n_val
    assert abs(half.metrics.n_train - full.metrics.n_train / 2) <= 4


# --- Frozen heads from one cache: sweep and kNN; the image cache; partial fine-tuning and LoRA ---

SYNTH = dict(data="synthetic:n=120,size=24,groups=40", backbone="resnet18", weights="none", image_size=32)


def test_head_sweep_and_knn_share_the_feature_cache_and_report_their_choice(tmp_path):
    from medtransfer.inference import predict

    sweep = run(tmp_path, "sweep", **SYNTH, epochs=5, head_sweep=True)
    knn = run(tmp_path, "knn", **SYNTH, head="knn")
    assert knn.metrics.timing["cache_hit"]  # the kNN probe reused the sweep's features
    choice = sweep.metrics.head_selection
    assert len(choice["candidates"]) == 16
    best = max(c["val_score"] for c in choice["candidates"])
    assert choice["val_score"] == best and (choice["lr"], choice["weight_decay"]) in \
        [(c["lr"], c["weight_decay"]) for c in choice["candidates"] if c["val_score"] == best]
    assert knn.metrics.head_selection["k"] in (10, 20, 50)
    assert [c["k"] for c in knn.metrics.head_selection["candidates"]] == [10, 20, 50]
    for outcome in (sweep, knn):
        test = outcome.metrics.test["auroc"]
        assert test.low <= test.value <= test.high  # a result with its bootstrap CI
    assert (knn.run_dir.path / "knn.safetensors").is_file() and not (knn.run_dir.path / "head.safetensors").exists()
    # Both runs predict new images from their saved files, matching predictions.csv for the same samples.
    from medtransfer.data.synthetic import load_synthetic

    table = load_synthetic(SYNTH["data"])
    for outcome in (sweep, knn):
        preds = pd.read_csv(outcome.run_dir.path / "predictions.csv").set_index("sample_id")
        sample = preds.index[:4]
        paths = []
        for sid in sample:
            from PIL import Image

            path = tmp_path / f"{outcome.run_dir.path.name}-{sid}.png"
            Image.fromarray(table.pixels(int(np.flatnonzero(table.frame["sample_id"] == sid)[0]))).save(path)
            paths.append(path)
        fresh = predict(outcome.run_dir.path, paths, "cpu")
        assert np.allclose(fresh.filter(like="prob_").to_numpy(), preds.loc[sample].filter(like="prob_").to_numpy(),
                           atol=2e-3)  # float16 cached features vs float32 here


def test_the_image_cache_changes_speed_not_results(tmp_path):
    for mode, extra in (("frozen", {"epochs": 3}), ("finetune", {"epochs": 2, "batch_size": 16})):
        cached = run(tmp_path, f"{mode}-cached", **SYNTH, mode=mode, **extra)
        plain = run(tmp_path, f"{mode}-plain", **SYNTH, mode=mode, image_cache=False,
                    cache_dir=str(tmp_path / f"other-{mode}"), **extra)
        assert cached.metrics.test == plain.metrics.test
        assert "image_cache_hit" in cached.metrics.timing and "image_cache_hit" not in plain.metrics.timing
    assert len(list((tmp_path / "cache" / "images").iterdir())) == 1  # frozen filled it; finetune reused it
    assert not (tmp_path / "other-finetune" / "images").exists()


def test_freeze_blocks_trains_only_the_last_blocks_and_keeps_the_rest_bit_identical(tmp_path):
    from safetensors.torch import load_file

    from medtransfer.models.backbone import build_backbone

    outcome = run(tmp_path, "partial", **SYNTH, mode="finetune", epochs=2, batch_size=16, freeze_blocks=1)
    initial = build_backbone("resnet18", "none", 32, seed=0).state_dict()
    saved = load_file(str(outcome.run_dir.path / "model.safetensors"))
    trainable = [k for k in initial if k.startswith("model.layer4.")]
    frozen = [k for k in initial if k not in trainable]
    n_head = sum(v.numel() for k, v in saved.items() if k.startswith("head.net."))
    n_layer4 = sum(initial[k].numel() for k in trainable if not k.endswith(("running_mean", "running_var",
                                                                            "num_batches_tracked")))
    assert outcome.metrics.timing["n_trainable"] == n_layer4 + n_head
    assert all(np.array_equal(saved[f"backbone.{k}"].numpy(), initial[k].numpy()) for k in frozen)  # BN stats too
    assert any(not np.array_equal(saved[f"backbone.{k}"].numpy(), initial[k].numpy()) for k in trainable)


@pytest.mark.slow
def test_lora_run_trains_adapters_only_and_saves_plain_weights(tmp_path):
    from safetensors.torch import load_file

    from medtransfer.models.backbone import build_backbone
    from medtransfer.inference import load_model

    vit = dict(SYNTH, backbone="dinov2_vits14", image_size=28)
    outcome = run(tmp_path, "lora", **vit, mode="finetune", epochs=2, batch_size=16, lora_rank=2,
                  grad_checkpointing=True)
    plain = build_backbone("dinov2_vits14", "none", 28, seed=0)
    qkv_proj = [m for name, m in plain.model.named_modules() if name.endswith(("attn.qkv", "attn.proj"))]
    n_lora = sum(2 * (m.in_features + m.out_features) for m in qkv_proj)
    n_head = plain.num_features * 2 + 2
    assert outcome.metrics.timing["n_trainable"] == n_lora + n_head
    saved = load_file(str(outcome.run_dir.path / "model.safetensors"))
    assert {k.removeprefix("backbone.") for k in saved if k.startswith("backbone.")} == set(plain.state_dict())
    initial = plain.state_dict()
    # Merged adapters moved the attention weights; everything else in the backbone is untouched.
    for key, value in initial.items():
        moved = not np.array_equal(saved[f"backbone.{key}"].numpy(), value.numpy())
        assert moved == key.endswith(("attn.qkv.weight", "attn.proj.weight")), key
    load_model(outcome.run_dir.path)  # `predict` rebuilds it without peft


def test_extraction_halves_the_batch_until_it_fits(tmp_path, monkeypatch):
    import medtransfer.engine.features as features

    real, tried = features.extract, []

    def small_memory(backbone, batches, inputs, out, progress=None):
        for images, _, _ in batches:
            tried.append(len(images))
            if len(images) > 16:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            break
        return real(backbone, batches, inputs, out, progress)

    monkeypatch.setattr(features, "extract", small_memory)
    outcome = run(tmp_path, "oom", **SYNTH, epochs=2, batch_size=64)
    reference = run(tmp_path, "ref", **SYNTH, epochs=2, batch_size=64, cache_dir=str(tmp_path / "c2"))
    assert tried[:3] == [64, 32, 16] and outcome.metrics.timing["extract_batch_size"] == 16
    # Batches of 16 and of 64 may convolve with different kernels: the same probabilities up to float error.
    # (Not the metrics exactly: a rank metric jumps where that error flips a near tie.)
    probs = [o.run_dir.predictions().filter(like="prob_").to_numpy() for o in (outcome, reference)]
    np.testing.assert_allclose(probs[0], probs[1], rtol=0, atol=1e-5)


def test_knn_probe_on_breastmnist_features_gives_a_result_with_a_ci(tmp_path, shared_data):
    outcome = run(tmp_path, "knn", data=str(shared_data / "medmnist" / "breastmnist_64.npz"), backbone="resnet18",
                  weights="none", image_size=64, head="knn")
    test = outcome.metrics.test["auroc"]
    assert 0.5 < test.value <= 1.0 and test.low < test.value < test.high  # better than chance, with a CI
    assert outcome.metrics.head_selection["k"] in (10, 20, 50) and outcome.metrics.n_test == 156
    history = pd.read_csv(outcome.run_dir.path / "history.csv")
    assert list(history["k"]) == [10, 20, 50]


def test_non_finite_probabilities_are_refused_before_any_metric():
    from medtransfer.errors import UserError
    from medtransfer.evaluation.scoring import check_finite

    check_finite({"val": np.full((3, 2), 0.5), "test": np.full((2, 2), 0.5)})
    with pytest.raises(UserError, match="1 of 2 test predictions are NaN or inf"):
        check_finite({"val": np.full((3, 2), 0.5), "test": np.array([[0.5, 0.5], [np.nan, 0.5]])})
