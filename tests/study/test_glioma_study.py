"""End to end on a synthetic glioma-like NIfTI set: 60 patients x 3 modalities, a grade-dependent lesion."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtransfer.study.run import run_study

pytestmark = pytest.mark.slow

GRADES = ("II", "III", "IV")


def write_patient(folder: Path, grade: int, rng: np.random.Generator) -> None:
    """A head-like ellipsoid with a lesion whose size and contrast grow with the grade; IV enhances on T1post."""
    shape = (32, 32, 12)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    brain = (x / 0.85) ** 2 + (y / 0.95) ** 2 + (z / 1.1) ** 2 < 1
    centre = rng.uniform(-0.3, 0.3, 3) * [1, 1, 0.2]
    r = np.sqrt(((x - centre[0]) / 1) ** 2 + ((y - centre[1]) / 1) ** 2 + ((z - centre[2]) / 2.5) ** 2)
    radius = (0.15, 0.28, 0.42)[grade] * rng.uniform(0.9, 1.1)
    lesion, rim = r < radius, (r < radius) & (r > radius * 0.6)
    affine = np.diag([2.0, 2.0, 4.0, 1.0])
    base = {"t1post": 300.0, "t2": 500.0, "flair": 400.0}
    for modality, level in base.items():
        volume = np.where(brain, level * rng.uniform(0.9, 1.1), 0.0) + rng.normal(0, 20, shape) * brain
        volume[lesion & brain] += {"t1post": 0, "t2": 400, "flair": 300}[modality] * (0.5 + 0.5 * grade)
        if modality == "t1post" and grade == 2:
            volume[rim & brain] += 600  # ring enhancement of a grade IV tumour
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), folder / f"{folder.name}_{modality}.nii.gz")


def test_synthetic_glioma_study_reaches_patient_level_auroc(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        pid, grade = f"P{i:03d}", i % 3
        write_patient(tmp_path / "volumes" / pid, grade, rng)
        rows.append((pid, GRADES[grade]))
    pd.DataFrame(rows, columns=["patient_id", "label"]).to_csv(tmp_path / "labels.csv", index=False)
    study = tmp_path / "glioma.yaml"
    study.write_text(f"""
name: glioma
datasets:
  glioma:
    data: {tmp_path / "volumes"}
    labels_csv: {tmp_path / "labels.csv"}
    modalities: [t1post, t2, flair]
    slices: center:4
backbones: [{{name: resnet18, image_size: 32, weights: none}}]
modes:
  frozen: {{epochs: 60}}
  finetune: {{epochs: 6, lr: 0.001, batch_size: 16}}
train: {{bootstrap: 500, workers: 0, cache_dir: {tmp_path / "cache"}}}
""")
    outcome = run_study(study, tmp_path / "out")
    assert outcome.ran == 2 and (tmp_path / "out" / "report" / "report.html").is_file()
    for spec in outcome.specs:
        run = Path(spec.config.out)
        metrics = json.loads((run / "metrics.json").read_text())
        preds = pd.read_csv(run / "predictions.csv")
        assert (preds.groupby("group")["split"].nunique() == 1).all()  # no patient in two splits
        patient = metrics["patient"]
        assert patient["n_test"] == preds[preds.split == "test"].group.nunique()
        auroc = patient["test"]["auroc"]
        assert auroc["low"] <= auroc["value"] <= auroc["high"]
        assert auroc["value"] >= 0.9, (spec.label, auroc)
        assert metrics["bootstrap"]["unit"] == "group"
