"""`medtransfer demo` runs the shipped demo study offline and ends in a report."""

from __future__ import annotations

import pytest
from helpers import run_cli

from medtransfer.demo import demo_study
from medtransfer.rundir import RunDir
from medtransfer.study.grid import expand
from medtransfer.study.schema import load_study


def test_demo_study_is_offline_and_complete(tmp_path):
    specs = expand(load_study(demo_study()), tmp_path)
    assert len(specs) == 4
    assert all(s.config.weights == "none" and s.config.data.startswith("synthetic:") for s in specs)
    assert {(s.config.backbone, s.config.mode) for s in specs} == {
        ("resnet18", "frozen"), ("resnet18", "finetune"), ("dinov2_vits14", "frozen"), ("dinov2_vits14", "finetune")}


@pytest.mark.slow
def test_demo_runs_and_ends_in_a_report(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli(["demo", "--out", str(out)], monkeypatch, capsys)
    assert code == 0, stderr
    specs = expand(load_study(demo_study()), out)
    for spec in specs:
        assert RunDir(spec.config.out).metrics().bootstrap.unit == "group"
        assert spec.config.backbone in stdout + stderr
    assert (out / "report" / "report.html").is_file()
    tuned = [s for s in specs if s.config.backbone == "resnet18" and s.config.mode == "finetune"][0]
    auroc = RunDir(tuned.config.out).metrics().test["auroc"]
    assert auroc.value > 0.8  # the fine-tuned CNN learns the synthetic class signal
