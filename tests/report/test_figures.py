"""Figures: every PNG is real and legible-sized; ROC points follow sklearn; scarcity only with several fractions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import auc, roc_auc_score, roc_curve

from medtransfer.report.aggregate import summarise
from medtransfer.report.collect import collect_runs
from medtransfer.report.diagnostics import drawn, roc_points

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KINDS = ("bars", "roc", "confusion", "learning", "reliability")


def test_every_figure_is_a_real_png(report_dir: Path) -> None:
    pngs = sorted((report_dir / "figures").glob("*.png"))
    assert len(pngs) == 3 * len(KINDS) + 1  # three tasks, and one scarcity curve
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_SIGNATURE, png.name
        assert png.stat().st_size > 10_000, png.name
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            width, height = image.size
            assert width >= 500 and height >= 400, (png.name, image.size)
            pixels = np.asarray(image.convert("L"))
            assert pixels.std() > 10, f"{png.name} looks blank"


def test_each_task_has_each_kind(report_dir: Path) -> None:
    names = {p.name for p in (report_dir / "figures").glob("*.png")}
    for task in ("binary_lesion", "three-class"):
        assert {f"{kind}_{task}.png" for kind in KINDS} <= names
    assert "scarcity_binary_lesion.png" in names  # resnet18 frozen ran at 50% and 100% of the training data
    assert "scarcity_three-class.png" not in names


def test_binary_roc_uses_the_positive_class() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, 50), 0, 1)
    fpr, tpr = roc_points(y, np.column_stack([1 - p1, p1]))
    ref_fpr, ref_tpr, _ = roc_curve(y, p1)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)


def test_multiclass_roc_is_micro_averaged() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 60)
    prob = rng.dirichlet(np.ones(3), 60) + 0.5 * np.eye(3)[y]
    prob /= prob.sum(1, keepdims=True)
    fpr, tpr = roc_points(y, prob)
    # sklearn's own micro average integrates the same curve; a tolerance, as its summation order is its own.
    assert auc(fpr, tpr) == pytest.approx(roc_auc_score(np.eye(3)[y], prob, average="micro"), rel=0, abs=1e-12)


def test_figures_draw_what_the_tables_estimated_from(study: Path, tmp_path: Path) -> None:
    """A seed left out of the tables (a fold missing) is not drawn: the figure takes the first replicate kept."""
    for run in (study / "cv").iterdir():
        if run.name != "resnet18-frozen-fold2-s0":
            shutil.copytree(run, tmp_path / run.name)
    summary = summarise(collect_runs(tmp_path))
    assert set(summary.excluded["seed"]) == {0}
    (chosen,) = drawn(summary.replicates)
    assert (chosen.replicate, chosen.pooled, len(chosen.y)) == ("1", True, summary.setups.iloc[0]["n_test"])
    reps = summary.replicates[0][1]
    np.testing.assert_array_equal(chosen.prob, reps.probs[0])  # seed 1's pooled out-of-fold predictions
