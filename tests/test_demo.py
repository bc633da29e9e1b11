"""`medtransfer demo` runs the shipped demo study offline and ends in a report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from medtransfer import demo
from medtransfer.demo import NOTE, TITLE, demo_study
from medtransfer.rundir import RunDir
from medtransfer.study.grid import expand
from medtransfer.study.schema import load_study


CLI = str(Path(sys.executable).with_name("medtransfer"))  # the installed console script
TINY_STUDY = """
name: demo
datasets: {synthetic: {data: "synthetic:n=60,size=16,groups=30"}}
backbones: [{name: resnet18, image_size: 32}]
modes: {frozen: {heads: [linear], epochs: 3}}
train: {weights: none, bootstrap: 100, workers: 0, cache_dir: CACHE}
"""


def test_demo_prints_the_results_table_and_the_note_on_stdout(tmp_path, monkeypatch, capsys):
    study = tmp_path / "demo.yaml"
    study.write_text(TINY_STUDY.replace("CACHE", str(tmp_path / "cache")))
    monkeypatch.setattr(demo, "demo_study", lambda: study)  # the real study is the slow test's
    code, stdout, stderr = run_cli(["demo", "--out", str(tmp_path / "demo")], monkeypatch, capsys)
    assert code == 0, stderr
    assert TITLE in stdout and "resnet18" in stdout.split(TITLE)[1] and NOTE in stdout
    assert "1 run(s) in" in stdout and str(tmp_path / "demo" / "report") in stdout
    assert "best epoch" in stderr and TITLE not in stderr


def test_demo_study_is_offline_and_complete(tmp_path):
    specs = expand(load_study(demo_study()), tmp_path)
    assert len(specs) == 4
    assert all(s.config.weights == "none" and s.config.data.startswith("synthetic:") for s in specs)
    assert {(s.config.backbone, s.config.mode) for s in specs} == {
        ("resnet18", "frozen"), ("resnet18", "finetune"), ("dinov2_vits14", "frozen"), ("dinov2_vits14", "finetune")}


@pytest.mark.slow
def test_demo_runs_and_ends_in_a_report_with_its_table_on_stdout(tmp_path):
    out = tmp_path / "demo"
    # `medtransfer demo --out DIR > out.txt`, with the installed console script: the table lands in out.txt.
    with open(tmp_path / "out.txt", "w") as stdout:
        done = subprocess.run([CLI, "demo", "--out", str(out)], stdout=stdout, stderr=subprocess.PIPE, text=True,
                              timeout=1200)
    assert done.returncode == 0, done.stderr
    printed = (tmp_path / "out.txt").read_text()
    assert TITLE in printed and "test AUROC" in printed and "4 run(s) in" in printed and NOTE in printed
    assert "epoch 1/" in done.stderr and "epoch 1/" not in printed  # progress stays on stderr
    specs = expand(load_study(demo_study()), out)
    table = printed.split(TITLE)[1]
    for spec in specs:
        assert RunDir(spec.config.out).metrics().bootstrap.unit == "group"
        assert spec.config.backbone in table
        assert "best " in (Path(spec.config.out) / "train.log").read_text()
    assert (out / "report" / "report.html").is_file()
    tuned = [s for s in specs if s.config.backbone == "resnet18" and s.config.mode == "finetune"][0]
    auroc = RunDir(tuned.config.out).metrics().test["auroc"]
    assert auroc.value > 0.8  # the fine-tuned CNN learns the synthetic class signal
