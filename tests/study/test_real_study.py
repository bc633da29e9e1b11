"""A small real-data study (BreastMNIST 64px with the 28px file as an external set, and the HAM10000 subset with
subgroups by sex and age band) ending in a complete report."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import timm
from safetensors.torch import save_file

from medtransfer.study.run import run_study

pytestmark = pytest.mark.slow

STUDY = """
name: real-small
datasets:
  breastmnist: {{data: {breast}, external: {{breast28: {breast28}}}}}
  ham10000: {{data: {ham}, test_fraction: 0.3, val_fraction: 0.3, class_weights: true, allow_missing_classes: true,
             subgroups: [sex, "age:0,50,120"], subgroup_min: 15}}
backbones:
  - {{name: resnet18, image_size: 48, weights: {resnet}}}
  - {{name: dinov2_vits14, image_size: 42, weights: {dino}}}
modes:
  frozen: {{heads: [mlp], epochs: 30}}
  finetune: {{epochs: 1, batch_size: 32, lr: 0.0005}}
seeds: [0, 1]
train: {{bootstrap: 300, workers: 1, cache_dir: {cache}}}
"""


def check_external_block(metrics: Path) -> None:
    """BreastMNIST's 28 and 64 px files hold the same images, so they share their patients: the external block tests
    the mechanism (classes matched, the whole file scored, the gap and its interval), not generalisation."""
    record = json.loads(metrics.read_text())
    block = record["external"]["breast28"]
    assert block["classes_missing"] == [] and list(block["counts"]) == record["classes"]
    assert block["n"] == 780 == sum(block["counts"].values())  # the whole file: its train, val and test
    assert block["bootstrap"]["unit"] == "sample" and block["bootstrap"]["seed"] != record["bootstrap"]["seed"]
    auroc, gap = block["metrics"]["auroc"], block["gap"]["auroc"]
    assert auroc["low"] <= auroc["value"] <= auroc["high"]
    assert gap["value"] == pytest.approx(record["test"]["auroc"]["value"] - auroc["value"])
    assert gap["low"] < gap["value"] < gap["high"] and "independently" in block["gap_interval"]
    preds = pd.read_csv(metrics.parent / "predictions.csv")
    external = preds[preds["split"] == "external:breast28"]
    assert len(external) == 780 and set(external["label"]) == set(record["classes"])
    assert external["predicted_at_threshold"].notna().all()  # the val operating point applies there too


def check_subgroup_block(metrics: Path) -> None:
    """HAM10000's subgroups: CIs from a bootstrap over lesions; every test lesion in one subgroup of each column,
    analysed or listed as too few."""
    record = json.loads(metrics.read_text())
    for column in ("sex", "age:0,50,120"):
        block = record["subgroups"][column]
        assert block["unit"] == "group" and "patients" in block["interval"]
        cases = {name: s["n_cases"] for name, s in block["subgroups"].items()} | block["too_few"]
        assert sum(cases.values()) == record["patient"]["n_test"]
        assert all(s["n_cases"] >= 15 for s in block["subgroups"].values())
        assert all(n < 15 for n in block["too_few"].values())


def check_shift_report(report: Path, html: str) -> None:
    """The report's external and subgroup parts: both tables with their figures, the gap computed for every setup."""
    assert "Internal vs external" in html and "Subgroups" in html
    for name in ("external", "external_pairwise", "subgroups"):
        assert (report / "tables" / f"{name}.csv").stat().st_size > 100, name
    external = pd.read_csv(report / "tables" / "external.csv")
    assert set(external["task"]) == {"breastmnist"} and len(external) == 4  # every setup on breast28
    assert external["gap_auroc_low"].notna().all() and (external["gap_auroc_low"] < external["gap_auroc_high"]).all()
    subgroups = pd.read_csv(report / "tables" / "subgroups.csv")
    assert set(subgroups["task"]) == {"ham10000"} and set(subgroups["column"]) == {"sex", "age:0,50,120"}
    figures = [report / "figures" / "external_breastmnist.png", *sorted(report.glob("figures/forest_*_ham10000.png"))]
    assert len(figures) == 3  # the scatter, and a forest plot per subgroup column
    for png in figures:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, png


def test_real_data_study_ends_in_a_full_report(tmp_path, shared_data):
    # Random-init checkpoints written locally: real loading code, no download, and seeds share one extraction.
    resnet, dino = tmp_path / "resnet18.safetensors", tmp_path / "dinov2_vits14.safetensors"
    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(resnet))
    save_file(timm.create_model("vit_small_patch14_dinov2", num_classes=0, img_size=42).state_dict(), str(dino))
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.format(breast=shared_data / "medmnist" / "breastmnist_64.npz",
                                  breast28=shared_data / "medmnist" / "breastmnist.npz",
                                  ham=shared_data / "ham10000_subset" / "subset_metadata.csv",
                                  resnet=resnet, dino=dino, cache=tmp_path / "cache"))
    outcome = run_study(study, tmp_path / "out")
    assert outcome.ran == 16
    for spec in outcome.specs:
        if spec.config.task == "breastmnist":
            check_external_block(Path(spec.config.out) / "metrics.json")
        else:
            check_subgroup_block(Path(spec.config.out) / "metrics.json")
    report = tmp_path / "out" / "report"
    html = (report / "report.html").read_text()
    assert "data:image/png;base64," in html
    for name in ("main_table", "pairwise", "cost"):
        for suffix in (".md", ".tex", ".csv"):
            assert (report / "tables" / f"{name}{suffix}").stat().st_size > 100, name + suffix
    main = pd.read_csv(report / "tables" / "main_table.csv")
    assert set(main["task"]) == {"breastmnist", "ham10000"} and len(main) == 8  # 2 backbones x 2 modes per task
    for task in ("breastmnist", "ham10000"):
        for kind in ("bars", "roc", "confusion", "learning", "reliability"):
            png = report / "figures" / f"{kind}_{task}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, png
    check_shift_report(report, html)
    if shutil.which("pdflatex"):
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main_table_standalone.tex"],
                              cwd=report / "tables", capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:]
