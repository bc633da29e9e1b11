"""The CUDA path (AMP + channels-last): runs only where a GPU is present; CI never needs one."""

from __future__ import annotations

import json

import pytest
import torch

from medtransfer.config import parse_config
from medtransfer.runner import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_cuda_run_matches_the_contract(tmp_path, mode):
    cfg = parse_config({"data": "synthetic:n=160,size=32,groups=80", "backbone": "resnet18", "weights": "none",
                        "image_size": 32, "mode": mode, "epochs": 3, "bootstrap": 200, "device": "cuda",
                        "out": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache")})
    outcome = train(cfg)
    metrics = json.loads((outcome.run_dir.path / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["auroc"]["value"] <= 1.0
    assert metrics["n_test"] > 0
