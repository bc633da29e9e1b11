"""`medtransfer demo` runs the embedded study offline and reports every run."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

from medtransfer.demo import DEMO_BACKBONES, DEMO_MODES, demo_configs


def test_demo_study_is_offline_and_complete():
    configs = demo_configs(__import__("pathlib").Path("x"))
    assert len(configs) == len(DEMO_BACKBONES) * len(DEMO_MODES)
    assert all(cfg.weights == "none" and cfg.data.startswith("synthetic:") for cfg in configs)


@pytest.mark.slow
def test_demo_runs_and_prints_every_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli(["demo", "--out", str(out)], monkeypatch, capsys)
    assert code == 0, stderr
    for cfg in demo_configs(out):
        metrics = json.loads((out / f"{cfg.backbone}-{cfg.mode}" / "metrics.json").read_text())
        assert metrics["bootstrap"]["unit"] == "group"
        assert cfg.backbone in stdout + stderr
    # The finetuned CNN learns the synthetic class signal.
    tuned = json.loads((out / "resnet18-finetune" / "metrics.json").read_text())["test"]["auroc"]
    assert tuned["value"] > 0.8
