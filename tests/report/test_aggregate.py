"""Seeds → one row with a CI; configurations → paired tests on shared test samples with Holm across a task."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medtransfer.evaluation.paired import holm
from medtransfer.report.aggregate import aggregate_seeds, one_factor_pairs, pairwise_comparisons, t_interval
from medtransfer.report.collect import RunIndex, collect_runs


@pytest.fixture(scope="module")
def index(study: Path) -> RunIndex:
    return collect_runs(study)


@pytest.fixture(scope="module")
def pairs(index: RunIndex) -> pd.DataFrame:
    return pairwise_comparisons(index)


def test_t_interval_matches_scipy_on_known_numbers() -> None:
    values = np.array([0.80, 0.90, 0.85])
    mean, low, high = t_interval(values)
    half = stats.t.ppf(0.975, df=2) * values.std(ddof=1) / np.sqrt(3)  # 4.303 × 0.05 / √3
    assert mean == pytest.approx(0.85)
    assert (low, high) == pytest.approx((0.85 - half, 0.85 + half))
    assert half == pytest.approx(0.124206, abs=1e-6)
    assert (low, high) == pytest.approx(stats.t.interval(0.95, 2, loc=0.85, scale=stats.sem(values)))


def test_t_interval_of_identical_seeds_is_a_point() -> None:
    assert t_interval(np.array([0.7, 0.7])) == (0.7, 0.7, 0.7)


def _index(values: dict[int, float], fraction: float = 1.0) -> RunIndex:
    rows = [{"task": "t", "backbone": "resnet18", "weights": "none", "mode": "frozen", "head": "linear",
             "train_fraction": fraction, "seed": seed, "setup": "resnet18 / frozen", "mode_label": "frozen",
             "auroc": v, "auroc_low": v - 0.1, "auroc_high": min(v + 0.1, 1.0)} for seed, v in values.items()]
    return RunIndex(pd.DataFrame(rows), metrics=["auroc"])


def test_one_seed_keeps_its_bootstrap_interval() -> None:
    row = aggregate_seeds(_index({3: 0.75})).iloc[0]
    assert (row["n_seeds"], row["ci"]) == (1, "bootstrap")
    assert (row["auroc"], row["auroc_low"], row["auroc_high"]) == (0.75, 0.65, 0.85)


def test_several_seeds_use_the_t_interval_cut_to_the_metric_range() -> None:
    row = aggregate_seeds(_index({0: 0.90, 1: 0.99, 2: 0.97})).iloc[0]
    mean, low, high = t_interval(np.array([0.90, 0.99, 0.97]))
    assert row["n_seeds"] == 3 and row["seeds"] == "0,1,2"
    assert row["auroc"] == pytest.approx(mean)
    assert row["auroc_low"] == pytest.approx(low)
    assert high > 1 and row["auroc_high"] == 1.0  # AUROC cannot exceed 1


def test_study_aggregates_per_configuration(index: RunIndex) -> None:
    agg = aggregate_seeds(index)
    assert len(agg) == 9  # 2 tasks × 4 setups at full data, + resnet18 frozen at half data
    half = agg[agg["train_fraction"] == 0.5]
    assert len(half) == 1 and half.iloc[0]["n_seeds"] == 1
    full = agg[agg["train_fraction"] == 1.0]
    assert (full["n_seeds"] == 2).all()
    row = full[(full["task"] == "three-class") & (full["setup"] == "dinov2_vits14 / finetune")].iloc[0]
    runs = index.runs[(index.runs["task"] == "three-class") & (index.runs["setup"] == "dinov2_vits14 / finetune")]
    values = runs["accuracy"].to_numpy()
    mean, low, high = t_interval(values)
    assert row["accuracy"] == pytest.approx(values.mean())
    assert row["accuracy_low"] == pytest.approx(max(low, 0.0))
    assert row["accuracy_high"] == pytest.approx(min(high, 1.0))


def test_pairs_differ_in_exactly_one_factor() -> None:
    setups = pd.DataFrame({"setup": ["r / frozen", "r / finetune", "d / frozen", "d / finetune"],
                           "backbone": ["r", "r", "d", "d"], "mode_label": ["frozen", "finetune"] * 2})
    pairs = one_factor_pairs(setups)
    assert len(pairs) == 4
    assert ("r / frozen", "d / finetune") not in pairs and ("r / finetune", "d / frozen") not in pairs


def test_expected_number_of_pairs(pairs: pd.DataFrame) -> None:
    # per task and seed: 2 backbone pairs (one per mode) + 2 mode pairs (one per backbone); the half run has no partner
    assert len(pairs) == 2 * 2 * 4
    assert set(pairs.groupby(["task", "seed"]).size()) == {4}
    assert (pairs["train_fraction"] == 1.0).all()


def test_differences_match_the_runs_metrics(index: RunIndex, pairs: pd.DataFrame) -> None:
    runs = index.runs[index.runs["train_fraction"] == 1.0].set_index(["task", "seed", "setup"])
    for _, pair in pairs.iterrows():
        a, b = runs.loc[(pair["task"], pair["seed"], pair["a"])], runs.loc[(pair["task"], pair["seed"], pair["b"])]
        assert pair["auroc_diff"] == pytest.approx(a["auroc"] - b["auroc"])
        assert pair["accuracy_diff"] == pytest.approx(a["accuracy"] - b["accuracy"])
        assert pair["n_test"] == a["n_test"]


def test_holm_runs_over_all_pairs_of_a_task(pairs: pd.DataFrame) -> None:
    for _, task in pairs.groupby("task"):
        expected = holm(task["mcnemar_p"].to_numpy(dtype=float))
        np.testing.assert_allclose(task["mcnemar_p_holm"].to_numpy(dtype=float), expected)
        assert (task["mcnemar_p_holm"] >= task["mcnemar_p"] - 1e-12).all()
    binary, three = pairs[pairs["task"] == "binary_lesion"], pairs[pairs["task"] == "three-class"]
    assert binary["delong_p"].notna().all()
    assert three["delong_p"].isna().all()  # DeLong is binary only


def test_runs_on_different_test_samples_are_not_paired(study: Path, tmp_path: Path) -> None:
    for name in ("resnet18-frozen-s0", "resnet18-finetune-s0"):
        shutil.copytree(study / "binary_lesion" / name, tmp_path / name)
    predictions = tmp_path / "resnet18-finetune-s0" / "predictions.csv"
    frame = pd.read_csv(predictions)
    frame["sample_id"] = "other_" + frame["sample_id"]
    frame.to_csv(predictions, index=False)
    assert len(pairwise_comparisons(collect_runs(tmp_path))) == 0
    shutil.copy(study / "binary_lesion" / "resnet18-frozen-s0" / "predictions.csv", predictions)
    assert len(pairwise_comparisons(collect_runs(tmp_path))) == 1  # same samples again: paired
