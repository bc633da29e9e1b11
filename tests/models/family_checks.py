"""Every mode, for one backbone family, on real shared data: the checks a family's test module calls with a tiny
model of that family in its real on-disk layout.

- a frozen run on BreastMNIST (64 px) whose cached features equal the family's own forward pass, batch for batch;
- a one-epoch fine-tune, `--freeze-blocks 1` and `--lora-rank 2`;
- `predict` from each run, which reproduces the run's own test probabilities.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from medtransfer.config import TrainConfig, parse_config
from medtransfer.engine.cache import cache_root
from medtransfer.engine.features import feature_cache
from medtransfer.engine.image_cache import image_batches
from medtransfer.engine.pipeline import InputPipeline
from medtransfer.fitting import extract_batch
from medtransfer.inference import predict
from medtransfer.models.backbone import build_backbone
from medtransfer.progress import Reporter
from medtransfer.runner import load_and_split, train

CPU = torch.device("cpu")
BREAST = "medmnist/breastmnist_64.npz"
OwnForward = Callable[[torch.Tensor], torch.Tensor]  # normalised batch → the family's own features


def breast(shared_data: Path) -> Path:
    """The 64 px BreastMNIST file, or a skip naming it."""
    path = shared_data / BREAST
    if not path.is_file():
        pytest.skip(f"{path} is missing (shared data is not in a fresh clone)")
    return path


def settings(data: Path, tmp_path: Path, backbone: str, name: str, **given: object) -> TrainConfig:
    """A small run of `backbone` on `data`, its cache under tmp_path (shared between a family's runs)."""
    values = {"data": str(data), "backbone": backbone, "weights": "pretrained", "epochs": 1, "bootstrap": 100,
              "workers": 0, "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / name), "batch_size": 64}
    return parse_config({**values, **given})


def check_frozen_features(cfg: TrainConfig, own: OwnForward) -> Path:
    """Train frozen; the cache entry the run wrote must equal the family's own forward pass over the same batches,
    stored as the cache stores features (float16, so rtol 1e-5 means the same half-precision values)."""
    run_dir = train(cfg).run_dir.path
    timing = json.loads((run_dir / "metrics.json").read_text())["timing"]
    cache = feature_cache(cache_root(cfg.cache_dir))
    cached = np.load(cache.root / timing["cache_entry"] / cache.filename)
    backbone = build_backbone(cfg.backbone, cfg.weights, cfg.image_size, cfg.pooling, cfg.seed)
    table = load_and_split(cfg, Reporter(quiet=True)).table
    want = np.zeros(cached.shape, dtype=np.float32)
    inputs = InputPipeline(backbone.preprocess, CPU)
    with (torch.inference_mode(),
          image_batches(cache_root(cfg.cache_dir), table, backbone.preprocess, 0, extract_batch(cfg, CPU), CPU)
          as (batches, _)):
        for images, _, rows in batches:
            want[rows.numpy()] = own(inputs(images)).float().numpy()
    assert cached.shape == (len(table), backbone.num_features)
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())  # what the run records of its backbone
    assert (resolved["family"], resolved["model_id"], resolved["weights_identity"], resolved["pooling_resolved"]) == (
        backbone.family, backbone.model_id, backbone.weights_id, backbone.pooling)
    np.testing.assert_allclose(cached.astype(np.float32), want.astype(np.float16).astype(np.float32), rtol=1e-5,
                               atol=0)
    assert np.isfinite(want).all() and want.std() > 0  # features that vary: not a constant or dead model
    return run_dir


def check_predict(run_dir: Path, data: Path, tmp_path: Path, count: int = 4) -> None:
    """`predict` on test images written as PNG files gives the run's own test probabilities for them."""
    saved = pd.read_csv(run_dir / "predictions.csv")
    test = saved[saved.split == "test"].head(count)
    arrays = np.load(data)
    folder = tmp_path / f"predict-{run_dir.name}"
    folder.mkdir()
    files = []
    for sample_id in test["sample_id"]:
        split, index = sample_id.rsplit("_", 1)
        path = folder / f"{sample_id}.png"
        Image.fromarray(arrays[f"{split}_images"][int(index)]).save(path)
        files.append(path)
    fresh = predict(run_dir, files, "cpu")
    probs = [c for c in saved.columns if c.startswith("prob_")]
    assert list(fresh.columns) == ["image", "predicted", *probs]
    np.testing.assert_allclose(fresh[probs].to_numpy(), test[probs].to_numpy(), atol=2e-3)
    assert list(fresh["predicted"]) == list(test["predicted"])


def check_every_mode(data: Path, tmp_path: Path, backbone: str, own: OwnForward, pooling: str,
                     image_size: int) -> dict[str, Path]:
    """The frozen run with its feature check, then finetune (all, last block, LoRA rank 2), each predicted from."""
    common = {"image_size": image_size, "pooling": pooling}
    runs = {"frozen": check_frozen_features(settings(data, tmp_path, backbone, "frozen", **common, epochs=5), own)}
    for name, extra in (("finetune", {}), ("freeze1", {"freeze_blocks": 1}), ("lora2", {"lora_rank": 2})):
        cfg = settings(data, tmp_path, backbone, name, mode="finetune", **common, **extra)
        runs[name] = train(cfg).run_dir.path
    for run_dir in runs.values():
        check_predict(run_dir, data, tmp_path)
    before = json.loads((runs["finetune"] / "metrics.json").read_text())["timing"]["n_trainable"]
    for name in ("freeze1", "lora2"):  # fewer weights train than in the full fine-tune
        assert json.loads((runs[name] / "metrics.json").read_text())["timing"]["n_trainable"] < before
    return runs
