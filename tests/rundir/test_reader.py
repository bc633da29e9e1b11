"""RunDir reads back what RunWriter wrote: the same config, metrics, predictions, history and weights paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtransfer.config import TrainConfig
from medtransfer.errors import UserError
from medtransfer.rundir import (CONFIG_FILE, DONE, HISTORY_FILE, METRICS_FILE, PATIENTS_FILE, PREDICTIONS_FILE,
                                WEIGHTS_KINDS, RunDir, RunMetrics, RunWriter, weights_file)


def predictions() -> pd.DataFrame:
    """Ids and labels that pandas would turn into numbers or NaN if it were let guess; one blank group."""
    return pd.DataFrame({"sample_id": ["007", "NA", "1.0"], "group": ["p1", "", "None"],
                         "split": ["val", "test", "test"], "label": ["0", "1", "NA"], "predicted": ["1", "1", "0"], "prob_0": [0.25, 0.5, 0.75],
                         "prob_1": [0.75, 0.5, 0.25]})


@pytest.fixture
def written(runs: dict[str, Path], tmp_path: Path) -> tuple[Path, dict]:
    """A run dir written through every typed RunWriter method, and what was written."""
    record = RunDir(runs["grouped"]).metrics()
    config = RunDir(runs["grouped"]).config() | {"note": "ünïcode", "nested": {"b": [1, 2], "a": None}}
    patients = pd.DataFrame({"group": ["007", "p2"], "split": ["test", "test"], "label": ["0", "1"],
                             "predicted": ["0", "0"], "n_images": [2, 1], "prob_0": [0.9, 0.6], "prob_1": [0.1, 0.4]})
    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.7, 0.5], "val_loss": [0.8, np.nan]})
    with RunWriter(tmp_path / "run") as writer:
        writer.write_config(config)
        writer.write_metrics(record)
        writer.write_predictions(predictions())
        writer.write_patient_predictions(patients)
        writer.write_history(history)
        writer.weights_path("head").write_bytes(b"weights")
        run_dir = writer.commit()
    return run_dir, {"config": config, "metrics": record, "patients": patients, "history": history}


def test_read_back_equals_what_was_written(written: tuple[Path, dict]) -> None:
    run_dir, wrote = written
    run = RunDir(run_dir)
    assert run.is_complete()
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE,
                                                                PATIENTS_FILE, HISTORY_FILE, DONE, "head.safetensors"])
    assert run.config() == wrote["config"] and list(run.config()) == list(wrote["config"])
    assert run.metrics() == wrote["metrics"]
    pd.testing.assert_frame_equal(run.patient_predictions(), wrote["patients"])
    pd.testing.assert_frame_equal(run.history(), wrote["history"])
    assert run.weights_path("head").read_bytes() == b"weights"


def test_predictions_keep_ids_and_labels_as_text(written: tuple[Path, dict]) -> None:
    frame = RunDir(written[0]).predictions()
    expected = predictions().replace({"group": {"": np.nan}})  # only a blank group is missing
    pd.testing.assert_frame_equal(frame, expected)
    test = RunDir(written[0]).predictions("test")
    assert list(test["sample_id"]) == ["NA", "1.0"] and list(test.index) == [0, 1]


def test_a_real_run_reads_back(runs: dict[str, Path]) -> None:
    run = RunDir(runs["grouped"])
    metrics, config = run.metrics(), run.config()
    assert isinstance(run.train_config(), TrainConfig)
    assert run.train_config().model_dump() == {k: v for k, v in config.items() if k in TrainConfig.model_fields}
    assert len(run.predictions()) == metrics.n_val + metrics.n_test
    assert len(run.predictions("test")) == metrics.n_test
    assert metrics.patient is not None
    assert len(run.patient_predictions("test")) == metrics.patient.n_test
    assert len(run.history()) == config["epochs"]
    assert run.weights_path("head").is_file() and not run.weights_path("model").exists()
    assert RunDir(runs["knn"]).weights_path("knn").is_file()
    assert RunDir(runs["finetune"]).weights_path("model").is_file()


def test_metrics_written_are_the_outcomes(runs: dict[str, Path]) -> None:
    # The runner writes the record it returns: the file parses to an equal model.
    record = RunDir(runs["knn"]).metrics()
    assert RunMetrics.model_validate(json.loads((runs["knn"] / METRICS_FILE).read_text())) == record


def test_weights_files_are_named_by_kind() -> None:
    assert [weights_file(kind) for kind in WEIGHTS_KINDS] == ["model.safetensors", "head.safetensors",
                                                              "knn.safetensors"]
    with pytest.raises(ValueError, match="weights kind"):
        weights_file("backbone")  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "problem"), [("a: [1", "not valid YAML"), ("- 1\n- 2\n", "not a mapping")])
def test_a_damaged_config_is_a_user_error(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(UserError, match=problem) as err:
        RunDir(tmp_path).config()
    assert str(tmp_path / CONFIG_FILE) in err.value.line()


def test_an_invalid_config_is_named(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("data: \"synthetic:\"\nmode: sideways\n")
    with pytest.raises(UserError, match="not a valid run configuration"):
        RunDir(tmp_path).train_config()


def test_a_missing_file_is_a_user_error(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert not run.is_complete() and not run.has(METRICS_FILE)
    for read in (run.metrics, run.config, run.predictions, run.history):
        with pytest.raises(UserError, match="cannot be read"):
            read()


def test_classes_are_read_alone_so_older_records_still_name_them(runs: dict[str, Path], tmp_path: Path) -> None:
    assert RunDir(runs["knn"]).classes() == RunDir(runs["knn"]).metrics().classes
    (tmp_path / METRICS_FILE).write_text(json.dumps({"classes": ["benign", "malignant"], "test": {}}))
    run = RunDir(tmp_path)
    assert run.classes() == ["benign", "malignant"]
    with pytest.raises(UserError, match="is not a run's metrics"):  # the full record is still checked in full
        run.metrics()


@pytest.mark.parametrize(("record", "problem"), [
    ({"test": {}}, "has no `classes` list"), ({"classes": ["only"]}, "has no `classes` list"),
    ({"classes": "ab"}, "has no `classes` list"), ({"classes": ["a", 1]}, "has no `classes` list"),
    ([], "has no `classes` list"), ({"classes": ["a", "b"], "schema_version": 99}, "upgrade medtransfer"),
])
def test_a_record_without_usable_classes_is_a_user_error(tmp_path: Path, record: object, problem: str) -> None:
    (tmp_path / METRICS_FILE).write_text(json.dumps(record))
    with pytest.raises(UserError, match=problem) as err:
        RunDir(tmp_path).classes()
    assert METRICS_FILE in err.value.line() and "\n" not in err.value.line()
