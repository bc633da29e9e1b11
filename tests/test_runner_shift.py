"""Beyond the internal split, end to end: external test sets and subgroups in a run's metrics.json and files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pandas as pd
from PIL import Image

from tests.test_runner import run

CLI = str(Path(sys.executable).with_name("medtransfer"))  # the installed console script
SMALL = dict(backbone="resnet18", weights="none", image_size=32, epochs=30)


def _write_contrast_set(root: Path, n: int, seed: int, spread: float) -> Path:
    """Two classes of 16 px images whose brightness differs by 24 grey levels; each image's brightness also varies
    with sd SPREAD, so a larger spread is a contrast shift that makes the classes overlap more."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(["a", "b"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n // 2):
            level = 100 + 24 * k + rng.normal(0, spread)
            pixels = np.clip(level + rng.normal(0, 10, (16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:04d}.png")
    return root


def test_a_contrast_shift_lowers_external_auroc_and_only_it_has_a_gap(tmp_path):
    """One training set and two external sets from the same generator: one as trained on (other images: the gap's
    CI holds 0), one with a contrast shift (lower AUROC, the gap's CI excludes 0)."""
    train = _write_contrast_set(tmp_path / "train", 600, seed=0, spread=12)
    same = _write_contrast_set(tmp_path / "same", 300, seed=1, spread=12)
    shifted = _write_contrast_set(tmp_path / "shifted", 300, seed=2, spread=36)
    outcome = run(tmp_path, "shift", data=str(train), external=[f"same={same}", f"shifted={shifted}"],
                  bootstrap=500, **SMALL | {"epochs": 60})
    external = outcome.metrics.external
    assert outcome.metrics.test["auroc"].value > 0.8
    same_gap, shifted_gap = external["same"].gap["auroc"], external["shifted"].gap["auroc"]
    assert same_gap.low < 0 < same_gap.high, same_gap
    assert shifted_gap.low > 0, shifted_gap
    assert external["shifted"].metrics["auroc"].value < external["same"].metrics["auroc"].value - 0.1


def test_ham10000_subgroups_by_sex_and_age_band_over_lesions(tmp_path, shared_data):
    ham = shared_data / "ham10000_subset"
    # localization has over a dozen sites, so some fall below the minimum (at most two of ~60 lesions can reach 25)
    outcome = run(tmp_path, "ham", data=str(ham / "subset_metadata.csv"), subgroups="sex,age:0,50,120,localization",
                  subgroup_min=25, test_fraction=0.5, val_fraction=0.3, allow_missing_classes=True, **SMALL)
    record = outcome.metrics.subgroups
    assert set(record) == {"sex", "age:0,50,120", "localization"}
    for column in record.values():
        assert column.unit == "group"  # resampled by lesion
        counts = {name: s.n_cases for name, s in column.subgroups.items()} | column.too_few
        assert sum(counts.values()) == outcome.metrics.patient.n_test  # every test lesion in one subgroup, or listed
        assert all(n >= 25 for n in (s.n_cases for s in column.subgroups.values()))
        assert all(n < 25 for n in column.too_few.values())
    assert len(record["localization"].too_few) >= 2  # listed with their counts, not dropped
    assert record["sex"].subgroups and all(s.metrics["accuracy"].low <= s.metrics["accuracy"].high
                                           for s in record["sex"].subgroups.values())
    assert set(record["sex"].subgroups) | set(record["sex"].too_few) == {"male", "female"}
    assert set(record["age:0,50,120"].subgroups) | set(record["age:0,50,120"].too_few) <= {"0–50", "50–120"}
    assert record["age:0,50,120"].bins == [0, 50, 120]
    preds = outcome.run_dir.predictions("test")
    assert {"subgroup:sex", "subgroup:age", "subgroup:localization"} <= set(preds.columns)
    meta = pd.read_csv(ham / "subset_metadata.csv").set_index("image_id")
    assert (preds["subgroup:sex"] == meta.loc[preds["sample_id"], "sex"].to_numpy()).all()


def test_finetune_scores_its_external_set(tmp_path):
    outcome = run(tmp_path, "ft", data="synthetic:n=80,size=24,groups=40", mode="finetune", epochs=1, batch_size=16,
                  backbone="resnet18", weights="none", image_size=32,
                  external=["b=synthetic:n=40,size=24,groups=20,seed=5"])
    block = outcome.metrics.external["b"]
    assert block.n == 40 and block.n_groups == 20 and block.bootstrap.unit == "group"
    assert block.patient is not None and block.patient.n == 20
    patients = outcome.run_dir.patient_predictions("external:b")
    assert len(patients) == 20


def test_console_script_takes_repeated_external_sets_and_refuses_a_bad_one(tmp_path):
    base = [CLI, "train", "synthetic:n=60,size=16", "--backbone", "resnet18", "--weights", "none",
            "--image-size", "16", "--epochs", "2", "--bootstrap", "100", "--workers", "0",
            "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(base + ["--external", "a=synthetic:n=20,size=16,seed=1", "--external",
                                  "b=synthetic:n=30,size=16,seed=2", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert {name: block["n"] for name, block in record["external"].items()} == {"a": 20, "b": 30}
    bad = subprocess.run(base + ["--external", "nameless", "--out", str(tmp_path / "bad")], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "NAME=DATA" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()



def test_an_external_set_without_one_class_reports_no_metric_that_needs_every_class(tmp_path):
    """Negatives only: PPV would be 0 and kappa 0 by construction there, and their gaps would look significant."""
    train = _write_contrast_set(tmp_path / "train", 200, seed=0, spread=12)
    negatives = _write_contrast_set(tmp_path / "ext", 40, seed=3, spread=12)
    shutil.rmtree(negatives / "b")
    outcome = run(tmp_path, "neg", data=str(train), external=[f"neg={negatives}"], **SMALL)
    block = outcome.metrics.external["neg"]
    assert block.classes_missing == ["b"] and block.n == 20
    for metrics in (block.metrics, block.gap):
        assert np.isnan([metrics[m].value for m in ("auroc", "auprc", "kappa", "ppv", "npv", "f1_macro")]).all()
    assert np.isfinite([block.metrics["accuracy"].value, block.gap["specificity"].low]).all()


def test_external_patients_beside_an_internal_split_without_are_called_at_the_val_threshold(tmp_path):
    outcome = run(tmp_path, "p", data="synthetic:n=120,size=16", external=["b=synthetic:n=40,size=16,groups=20,seed=5"],
                  backbone="resnet18", weights="none", image_size=16, epochs=10)
    block, threshold = outcome.metrics.external["b"], outcome.metrics.threshold.value
    patients = outcome.run_dir.patient_predictions("external:b")
    positive = patients["label"] == outcome.metrics.classes[1]
    called = patients["prob_" + outcome.metrics.classes[1]].to_numpy() >= threshold
    assert block.patient.metrics["sensitivity"].value == pytest.approx(called[positive].mean())
    assert block.patient.metrics["specificity"].value == pytest.approx(1 - called[~positive].mean())
