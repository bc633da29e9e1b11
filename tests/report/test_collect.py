"""collect_runs: every run folder is found; finished ones become labelled rows, the rest are listed with a reason."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from medtransfer.evaluation.metric_registry import METRICS
from medtransfer.report.collect import collect_runs, find_run_dirs, task_of
from medtransfer.rundir import CONFIG_FILE, METRICS_FILE, RunDir


def test_finished_runs_become_labelled_rows(study: Path) -> None:
    index = collect_runs(study)
    runs = index.runs
    # 2 tasks × 2 backbones × 2 modes × 2 seeds + the half-data run, 3 folds × 2 seeds, and the lr=0.01 run
    assert len(runs) == 17 + 6 + 1
    assert set(runs["task"]) == {"binary_lesion", "three-class", "cv"}
    assert set(runs["backbone"]) == {"resnet18", "dinov2_vits14"}
    assert set(runs["mode"]) == {"frozen", "finetune"}
    assert set(runs.loc[runs["mode"] == "frozen", "head"]) == {"linear"}
    assert runs.loc[runs["mode"] == "finetune", "head"].isna().all()
    assert sorted(runs["train_fraction"].unique()) == [0.5, 1.0]
    assert set(runs["seed"]) == {0, 1}
    assert all(Path(d).is_dir() for d in runs["run_dir"])
    assert set(METRICS) - {"kappa_quadratic"} <= set(index.metrics)  # no task here is ordinal
    for name in ("auroc", "accuracy", "f1_weighted"):
        assert ((runs[f"{name}_low"] <= runs[name] + 1e-12) & (runs[name] <= runs[f"{name}_high"] + 1e-12)).all()
    assert (runs["bootstrap_n"] == 200).all()


def test_incomplete_run_is_listed_not_dropped(study: Path) -> None:
    skipped = collect_runs(study).skipped
    assert len(skipped) == 1
    row = skipped.iloc[0]
    assert row["run_dir"].endswith("crashed-copy")
    assert "DONE" in row["reason"]
    assert (row["task"], row["backbone"], row["mode"]) == ("binary_lesion", "resnet18", "frozen")


def test_report_folder_is_not_a_run(study: Path, report_dir: Path) -> None:
    assert report_dir.parent == study
    found = find_run_dirs(study)
    assert not any(report_dir in d.parents or d == report_dir for d in found)
    assert len(collect_runs(study).runs) == 24


def test_run_subfolders_are_not_searched(tmp_path: Path) -> None:
    (tmp_path / "a" / "nested").mkdir(parents=True)
    (tmp_path / "a" / "config.yaml").write_text("mode: frozen\n")
    (tmp_path / "a" / "nested" / "metrics.json").write_text("{}")
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "b" / "c" / "metrics.json").write_text("{}")
    assert find_run_dirs(tmp_path) == [tmp_path / "a", tmp_path / "b" / "c"]


def test_task_falls_back_to_the_data_stem() -> None:
    assert task_of({"data": "/data/chest_xray.npz", "task": None}) == "chest_xray"
    assert task_of({"data": "/data/ham/metadata.csv"}) == "metadata"
    assert task_of({"data": "/data/kaggle/chest", "task": "pneumonia"}) == "pneumonia"


def _copy(study: Path, dest: Path, names: list[str]) -> None:
    for name in names:
        shutil.copytree(study / "binary_lesion" / name, dest / name)


def test_rerun_of_the_same_seed_is_not_a_second_seed(study: Path, tmp_path: Path) -> None:
    _copy(study, tmp_path, ["resnet18-frozen-s0", "resnet18-frozen-s1"])
    shutil.copytree(tmp_path / "resnet18-frozen-s0", tmp_path / "resnet18-frozen-s0-2")
    later = (tmp_path / "resnet18-frozen-s0" / "DONE").stat().st_mtime + 60
    os.utime(tmp_path / "resnet18-frozen-s0-2" / "DONE", (later, later))
    index = collect_runs(tmp_path)
    assert sorted(index.runs["seed"]) == [0, 1]
    assert str(tmp_path / "resnet18-frozen-s0-2") in set(index.runs["run_dir"])
    assert len(index.skipped) == 1
    assert index.skipped.iloc[0]["run_dir"] == str(tmp_path / "resnet18-frozen-s0")
    assert "rerun" in index.skipped.iloc[0]["reason"]


def test_unreadable_metrics_are_listed(study: Path, tmp_path: Path) -> None:
    _copy(study, tmp_path, ["resnet18-frozen-s0", "resnet18-finetune-s0"])
    (tmp_path / "resnet18-finetune-s0" / "metrics.json").write_text("{not json")
    index = collect_runs(tmp_path)
    assert list(index.runs["mode"]) == ["frozen"]
    assert "metrics" in index.skipped.iloc[0]["reason"] or "run files" in index.skipped.iloc[0]["reason"]


def test_several_weight_sources_are_named_beside_the_backbone(study: Path, tmp_path: Path) -> None:
    _copy(study, tmp_path, ["resnet18-frozen-s0", "resnet18-finetune-s0"])
    config = tmp_path / "resnet18-finetune-s0" / "config.yaml"
    config.write_text(config.read_text().replace("weights: none", "weights: imagenet"))
    runs = collect_runs(tmp_path).runs
    assert set(runs["backbone"]) == {"resnet18 (none)", "resnet18 (imagenet)"}


def test_a_run_from_a_newer_medtransfer_is_listed_with_the_upgrade(study: Path, tmp_path: Path) -> None:
    _copy(study, tmp_path, ["resnet18-frozen-s0", "resnet18-finetune-s0"])
    metrics = tmp_path / "resnet18-finetune-s0" / METRICS_FILE
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "schema_version": 999}))
    index = collect_runs(tmp_path)
    assert list(index.runs["mode"]) == ["frozen"]
    reason = index.skipped.iloc[0]["reason"]
    assert METRICS_FILE in reason and "upgrade medtransfer" in reason and str(tmp_path) not in reason


def test_a_damaged_config_is_listed(study: Path, tmp_path: Path) -> None:
    _copy(study, tmp_path, ["resnet18-frozen-s0", "resnet18-finetune-s0"])
    (tmp_path / "resnet18-finetune-s0" / CONFIG_FILE).write_text("mode: [frozen\n")
    index = collect_runs(tmp_path)
    assert list(index.runs["mode"]) == ["frozen"]
    assert index.skipped.iloc[0]["run_dir"] == str(tmp_path / "resnet18-finetune-s0")
    assert CONFIG_FILE in index.skipped.iloc[0]["reason"] and "YAML" in index.skipped.iloc[0]["reason"]


def test_rows_hold_what_the_metrics_record(study: Path) -> None:
    runs = collect_runs(study).runs
    row = runs[runs["run_dir"].str.endswith("binary_lesion/resnet18-frozen-s0")].iloc[0]
    record = RunDir(Path(row["run_dir"])).metrics()
    assert row["auroc"] == record.test["auroc"].value and row["auroc_low"] == record.test["auroc"].low
    assert row["val_auroc"] == record.val["auroc"].value
    assert (row["n_test"], row["n_classes"], row["bootstrap_unit"]) == (record.n_test, 2, record.bootstrap.unit)
    assert row["threshold"] == record.threshold.value
    assert row["patient_threshold"] == record.patient.threshold.value


def test_a_setting_left_unset_in_one_run_still_names_the_setups_apart(study: Path, tmp_path: Path) -> None:
    """Two fine-tunes alike but for --freeze-blocks (unset, so null, in one): two setups, each named by it (a
    missing value counts as a value: the report once merged them and crashed on the duplicate bar)."""
    _copy(study, tmp_path, ["resnet18-finetune-s0"])
    shutil.copytree(tmp_path / "resnet18-finetune-s0", tmp_path / "resnet18-finetune-s0-frozen1")
    config = tmp_path / "resnet18-finetune-s0-frozen1" / "config.yaml"
    config.write_text(config.read_text().replace("freeze_blocks: null", "freeze_blocks: 1"))
    runs = collect_runs(tmp_path).runs
    assert runs["setup"].nunique() == 2 and all("freeze_blocks=" in name for name in runs["setup"])
