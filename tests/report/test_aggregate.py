"""Setups: seeds and folds become one estimate, nothing is dropped unlisted; pairs are compared once, Holm per task."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medtransfer.evaluation.paired_tests import holm
from medtransfer.report.aggregate import Summary, one_factor_pairs, summarise
from medtransfer.report.collect import RunIndex, collect_runs
from medtransfer.report.predictions import read_predictions


@pytest.fixture(scope="module")
def index(study: Path) -> RunIndex:
    return collect_runs(study)


@pytest.fixture(scope="module")
def summary(index: RunIndex) -> Summary:
    return summarise(index)


def _row(setups: pd.DataFrame, task: str, setup: str, fraction: float = 1.0) -> pd.Series:
    rows = setups[(setups["task"] == task) & (setups["setup"] == setup) & (setups["train_fraction"] == fraction)]
    assert len(rows) == 1, (task, setup, rows)
    return rows.iloc[0]


def test_every_run_reaches_one_setup(index: RunIndex, summary: Summary) -> None:
    setups = summary.setups
    # binary_lesion: 4 full-data setups + the half-data one; three-class: 4 + the lr=0.01 one; cv: one.
    assert len(setups) == 11
    replicates = (setups["n_seeds"] * setups["n_folds"].clip(lower=1)).sum()
    assert replicates == len(index.runs)  # no run dropped, none counted twice
    assert summary.excluded.empty
    assert set(setups.loc[setups["task"] == "three-class", "setup"]) == {
        "resnet18 / frozen + linear, lr=0.001", "resnet18 / frozen + linear, lr=0.01",
        "resnet18 / fine-tuned, lr=0.0001", "dinov2_vits14 / frozen + linear, lr=0.001",
        "dinov2_vits14 / fine-tuned, lr=0.0001"}
    assert "resnet18 / frozen + linear" in set(setups.loc[setups["task"] == "binary_lesion", "setup"])


def test_seeds_combine_into_the_mean_with_an_interval_that_says_what_it_covers(index: RunIndex,
                                                                                summary: Summary) -> None:
    row = _row(summary.setups, "binary_lesion", "resnet18 / fine-tuned")
    runs = index.runs[(index.runs["task"] == "binary_lesion") & (index.runs["setup"] == "resnet18 / fine-tuned")
                      & (index.runs["train_fraction"] == 1.0)]
    assert row["n_seeds"] == 2 and row["seeds"] == "0,1"
    for name in ("auroc", "accuracy", "f1_weighted"):
        assert row[name] == pytest.approx(runs[name].mean())
        assert row[f"{name}_low"] < row[name] < row[f"{name}_high"] or row[name] in (0.0, 1.0)
    assert "2 seeds" in row["ci"] and "patients" in row["ci"]  # binary_lesion has 60 patients of 2 images
    single = _row(summary.setups, "binary_lesion", "resnet18 / frozen + linear", 0.5)
    assert single["n_seeds"] == 1 and "1 seed" in single["ci"]


def test_three_folds_pool_into_one_out_of_fold_estimate(index: RunIndex, summary: Summary) -> None:
    row = _row(summary.setups, "cv", "resnet18 / frozen + linear, 3-fold CV")
    assert (row["n_folds"], row["n_seeds"]) == (3, 2)
    assert row["n_test"] == 120  # every sample once: the folds' held-out parts cover the data
    runs = index.runs[index.runs["task"] == "cv"]
    per_seed = []
    for _, seed_runs in runs.groupby("seed"):
        pooled = pd.concat([read_predictions(d) for d in seed_runs["run_dir"]])
        per_seed.append(roc_auc_score(pooled["label"] == pooled.columns[-1].removeprefix("prob_"),
                                      pooled[pooled.columns[-1]]))
    assert row["auroc"] == pytest.approx(np.mean(per_seed))
    folds = [float(v) for v in row["auroc_folds"].split(", ")]
    assert folds == pytest.approx(runs.groupby("fold")["auroc"].mean().to_list(), abs=5e-4)
    assert "3 folds" in row["ci"]


def test_folds_sharing_a_predefined_test_split_are_replicates(study: Path, tmp_path: Path) -> None:
    """With a predefined test split each fold holds out val: the folds share one test set and are not pooled."""
    source = study / "cv" / "resnet18-frozen-fold0-s0"
    for fold in range(3):
        run = tmp_path / f"fold{fold}"
        shutil.copytree(study / "cv" / f"resnet18-frozen-fold{fold}-s0", run)
        for name in ("predictions.csv", "patient_predictions.csv"):  # fold 0's test rows, another model's scores
            mine, shared = (pd.read_csv(d / name, dtype=str, keep_default_na=False) for d in (run, source))
            test = shared[shared["split"] == "test"].reset_index(drop=True)
            probs = [c for c in test if c.startswith("prob_")]
            test[probs] = np.roll(test[probs].to_numpy(), fold, axis=0)
            pd.concat([mine[mine["split"] != "test"], test]).to_csv(run / name, index=False)
    summary = summarise(collect_runs(tmp_path))
    assert summary.excluded.empty
    row = summary.setups.iloc[0]
    assert (row["n_seeds"], row["n_folds"], row["seeds"]) == (3, 0, "0/f0,0/f1,0/f2")  # one test set, not pooled
    assert row["ci"].endswith("over test patients, 3 fold models")


def test_a_missing_fold_is_listed_never_dropped_silently(study: Path, tmp_path: Path) -> None:
    for run in (study / "cv").iterdir():
        if run.name != "resnet18-frozen-fold2-s1":
            shutil.copytree(run, tmp_path / run.name)
    summary = summarise(collect_runs(tmp_path))
    assert summary.setups.iloc[0]["n_seeds"] == 1
    # seed 1's folds 0 and 1 are not pooled without fold 2, at the image level and at the patient level
    reasons = summary.excluded["reason"]
    assert len(reasons) == 4 and reasons.str.contains(r"fold\(s\) \[2\] of 3").all()
    assert reasons.str.startswith("patient level: ").sum() == 2


def _copy_with_other_ids(study: Path, tmp_path: Path, kept: str, moved: str) -> Path:
    """Two binary_lesion runs copied, the second's predictions renamed to other samples; its predictions.csv."""
    for name in (kept, moved):
        shutil.copytree(study / "binary_lesion" / name, tmp_path / name)
    predictions = tmp_path / moved / "predictions.csv"
    frame = pd.read_csv(predictions)
    frame["sample_id"] = "other_" + frame["sample_id"]
    frame.to_csv(predictions, index=False)
    return predictions


def test_a_seed_on_other_test_samples_is_listed_not_mixed(study: Path, tmp_path: Path) -> None:
    _copy_with_other_ids(study, tmp_path, "resnet18-frozen-s0", "resnet18-frozen-s1")
    summary = summarise(collect_runs(tmp_path))
    assert summary.setups.iloc[0]["n_seeds"] == 1
    assert list(summary.excluded["seed"]) == [1] and "differ" in summary.excluded.iloc[0]["reason"]


def test_patient_level_estimates_where_the_data_has_patients(summary: Summary) -> None:
    patients = summary.patients
    assert set(patients["task"]) == {"binary_lesion", "cv"}  # three-class has no groups
    row = _row(patients, "binary_lesion", "resnet18 / fine-tuned")
    assert row["n_test"] < _row(summary.setups, "binary_lesion", "resnet18 / fine-tuned")["n_test"]
    assert "patients" in row["ci"]


def test_per_class_recall_for_every_setup(summary: Summary) -> None:
    per_class = summary.per_class
    name = "resnet18 / frozen + linear, lr=0.01"
    three = per_class[(per_class["task"] == "three-class") & (per_class["setup"] == name)]
    assert len(three) == 3 and three["n_test"].sum() == _row(summary.setups, "three-class", name)["n_test"]
    assert (three["recall_low"] <= three["recall"] + 1e-12).all()


def test_pairs_differ_in_exactly_one_factor() -> None:
    setups = pd.DataFrame({"setup": ["r / frozen", "r / finetune", "d / frozen", "d / finetune"],
                           "backbone": ["r", "r", "d", "d"], "mode_label": ["frozen", "finetune"] * 2})
    pairs = one_factor_pairs(setups)
    assert len(pairs) == 4
    assert ("r / frozen", "d / finetune") not in pairs and ("r / finetune", "d / frozen") not in pairs


def test_another_setting_is_a_factor_within_a_mode() -> None:
    setups = pd.DataFrame({"setup": ["fz lr1", "fz lr2", "ft"], "backbone": ["r"] * 3, "mode": ["frozen"] * 2 + [
        "finetune"], "mode_label": ["frozen"] * 2 + ["finetune"], "lr": [1e-3, 1e-2, 1e-4]})
    pairs = one_factor_pairs(setups, ("backbone", "mode_label", "lr"))
    # lr within frozen is one question; frozen vs fine-tuned differ in their mode's default lr, still one question
    assert sorted(pairs) == sorted([("fz lr1", "fz lr2"), ("fz lr1", "ft"), ("fz lr2", "ft")])


def test_each_pair_is_compared_once_with_seeds_aggregated(summary: Summary) -> None:
    pairs = summary.pairs
    binary = pairs[pairs["task"] == "binary_lesion"]
    assert len(binary) == 4 and not binary.duplicated(["a", "b"]).any()
    assert (binary["n_seeds_a"] == 2).all() and (binary["n_seeds_b"] == 2).all()
    setups = summary.setups.set_index(["task", "setup", "train_fraction"])
    for _, pair in binary.iterrows():
        a, b = setups.loc[("binary_lesion", pair["a"], 1.0)], setups.loc[("binary_lesion", pair["b"], 1.0)]
        assert pair["auroc_diff"] == pytest.approx(a["auroc"] - b["auroc"])
        assert pair["accuracy_diff"] == pytest.approx(a["accuracy"] - b["accuracy"])


def test_holm_runs_over_the_distinct_pairs_of_a_task(summary: Summary) -> None:
    for _, task in summary.pairs.groupby("task"):
        for test in ("auroc", "accuracy"):
            np.testing.assert_allclose(task[f"{test}_p_holm"].to_numpy(dtype=float),
                                       holm(task[f"{test}_p"].to_numpy(dtype=float)))
    binary = summary.pairs[summary.pairs["task"] == "binary_lesion"]
    assert binary["auroc_p"].notna().all() and binary["auroc_test"].str.contains("lust").all()  # patients: clustered


def test_runs_on_different_test_samples_are_not_paired(study: Path, tmp_path: Path) -> None:
    predictions = _copy_with_other_ids(study, tmp_path, "resnet18-frozen-s0", "resnet18-finetune-s0")
    assert len(summarise(collect_runs(tmp_path)).pairs) == 0
    shutil.copy(study / "binary_lesion" / "resnet18-frozen-s0" / "predictions.csv", predictions)
    assert len(summarise(collect_runs(tmp_path)).pairs) == 1  # same samples again: paired
