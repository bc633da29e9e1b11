"""One run end to end on real and synthetic data: files, cache reuse, determinism, leakage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import timm
from safetensors.torch import save_file

from medtransfer.config import parse_config
from medtransfer.evaluation.metrics import METRICS
from medtransfer.runner import train


def run(tmp_path, name, **values):
    values.setdefault("cache_dir", str(tmp_path / "cache"))
    values.setdefault("bootstrap", 200)
    values.setdefault("workers", 0)
    return train(parse_config({"out": str(tmp_path / name), **values}))


def test_frozen_run_writes_the_contract(tmp_path):
    outcome = run(tmp_path, "r", data="synthetic:n=120,size=24,groups=40,classes=3", backbone="resnet18",
                  weights="none", image_size=32, epochs=5)
    d = outcome.run_dir
    assert sorted(p.name for p in d.iterdir()) == ["DONE", "config.yaml", "head.safetensors", "history.csv",
                                                   "metrics.json", "patient_predictions.csv", "predictions.csv"]
    m = json.loads((d / "metrics.json").read_text())
    for split in ("val", "test"):
        assert set(m[split]) == set(METRICS)
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
    assert set(m["patient"]["test"]) == set(METRICS)
    assert patients.groupby("split")["n_images"].sum()["test"] == m["n_test"]


def test_frozen_breastmnist_with_local_safetensors_reuses_the_cache(tmp_path, shared_data):
    ckpt = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(ckpt))
    settings = dict(data=str(shared_data / "medmnist" / "breastmnist_64.npz"), backbone="resnet18",
                    weights=str(ckpt), image_size=64, mode="frozen", epochs=30, bootstrap=500)
    first = run(tmp_path, "a", **settings)
    second = run(tmp_path, "b", **settings)
    t1, t2 = first.metrics["timing"], second.metrics["timing"]
    assert not t1["cache_hit"] and t1["extract_seconds"] > 0
    assert t2["cache_hit"] and t2["extract_seconds"] == 0
    assert first.metrics["test"] == second.metrics["test"]
    auroc = first.metrics["test"]["auroc"]
    assert auroc["value"] > 0.5 and auroc["low"] < auroc["value"] < auroc["high"]
    assert first.metrics["n_test"] == 156


def test_ham10000_subset_splits_by_lesion(tmp_path, shared_data):
    outcome = run(tmp_path, "ham", data=str(shared_data / "ham10000_subset" / "subset_metadata.csv"),
                  backbone="resnet18", weights="none", image_size=32, epochs=3, test_fraction=0.3, val_fraction=0.3)
    preds = pd.read_csv(outcome.run_dir / "predictions.csv")
    meta = pd.read_csv(shared_data / "ham10000_subset" / "subset_metadata.csv")
    assert outcome.metrics["bootstrap"]["unit"] == "group"
    lesion_split = preds.groupby("group")["split"].nunique()
    assert (lesion_split == 1).all()
    assert set(preds["group"]) <= set(meta["lesion_id"])
    assert outcome.metrics["n_train"] + outcome.metrics["n_val"] + outcome.metrics["n_test"] == len(meta)


@pytest.mark.slow
def test_ham10000_full_metadata_with_skip_missing(tmp_path, shared_data):
    outcome = run(tmp_path, "ham", data=str(shared_data / "ham10000_subset" / "HAM10000_metadata.csv"),
                  skip_missing=True, backbone="resnet18", weights="none", image_size=32, epochs=2,
                  test_fraction=0.3, val_fraction=0.3)
    assert any("9891" in note for note in outcome.metrics["notes"])
    assert outcome.metrics["n_train"] + outcome.metrics["n_val"] + outcome.metrics["n_test"] == 124


def test_finetune_is_deterministic_per_seed(tmp_path):
    settings = dict(data="synthetic:n=96,size=24,groups=48", backbone="resnet18", weights="none", image_size=32,
                    mode="finetune", epochs=2, batch_size=16, lr=1e-3)
    a = run(tmp_path, "a", seed=0, **settings).metrics["test"]
    b = run(tmp_path, "b", seed=0, **settings).metrics["test"]
    c = run(tmp_path, "c", seed=1, **settings).metrics["test"]
    assert a == b
    assert a != c
    assert (tmp_path / "a" / "model.safetensors").is_file()


def test_train_fraction_keeps_a_grouped_share(tmp_path):
    full = run(tmp_path, "full", data="synthetic:n=200,size=16,groups=100", backbone="resnet18", weights="none",
               image_size=32, epochs=2)
    half = run(tmp_path, "half", data="synthetic:n=200,size=16,groups=100", backbone="resnet18", weights="none",
               image_size=32, epochs=2, train_fraction=0.5)
    assert half.metrics["n_test"] == full.metrics["n_test"] and half.metrics["n_val"] == full.metrics["n_val"]
    assert abs(half.metrics["n_train"] - full.metrics["n_train"] / 2) <= 4
