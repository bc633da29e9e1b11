"""The metrics record: today's files round-trip through RunMetrics, older ones read as version 0, newer are refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from medtransfer.errors import UserError
from medtransfer.rundir import METRICS_FILE, SCHEMA_VERSION, RunDir, RunMetrics


def same(a: object, b: object) -> bool:
    """Equal as JSON values, NaN equal to NaN (undefined metrics are NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def unversioned(run_dir: Path) -> dict:
    """The run's metrics file as a run from before the schema was versioned would hold it."""
    data = json.loads((run_dir / METRICS_FILE).read_text())
    assert data.pop("schema_version") == SCHEMA_VERSION
    return data


@pytest.mark.parametrize("name", ["grouped", "knn", "finetune"])
def test_a_real_runs_metrics_round_trip(runs: dict[str, Path], name: str) -> None:
    written = json.loads((runs[name] / METRICS_FILE).read_text())
    record = RunMetrics.model_validate(written)
    assert record.schema_version == SCHEMA_VERSION
    assert same(record.to_json(), written)
    assert list(record.to_json()) == list(written)  # the file's key order too
    # Byte for byte: the writer's JSON of the record is the file.
    assert json.dumps(record.to_json(), indent=2) + "\n" == (runs[name] / METRICS_FILE).read_text()


def test_the_sections_are_typed(runs: dict[str, Path]) -> None:
    grouped, knn = RunDir(runs["grouped"]).metrics(), RunDir(runs["knn"]).metrics()
    assert grouped.patient is not None and grouped.patient.n_test <= grouped.n_test
    assert grouped.threshold is not None and grouped.threshold.positive_class == grouped.classes[1]
    assert grouped.bootstrap.unit == "group" and knn.bootstrap.unit == "sample"
    auroc = grouped.test["auroc"]
    assert auroc.low <= auroc.value <= auroc.high
    assert knn.head_selection is not None and knn.head_selection["k"] == knn.best_epoch
    assert knn.threshold is None and knn.patient is None and len(knn.classes) == 3
    assert sum(stats.n for stats in knn.per_class["test"].values()) == knn.n_test


def test_a_file_without_a_version_reads_as_version_0(runs: dict[str, Path], tmp_path: Path) -> None:
    old = unversioned(runs["grouped"])
    record = RunMetrics.model_validate(old)
    assert record.schema_version == 0
    assert same(record.to_json(), {"schema_version": 0, **old})
    (tmp_path / METRICS_FILE).write_text(json.dumps(old))
    assert RunDir(tmp_path).metrics().schema_version == 0


def test_a_record_from_before_the_optional_sections_is_accepted(runs: dict[str, Path]) -> None:
    old = unversioned(runs["grouped"])
    for later in ("per_class", "threshold", "counts", "ordinal", "patient", "duplicates"):
        del old[later]
    record = RunMetrics.model_validate(old)
    assert record.patient is None and record.per_class is None
    assert same(record.to_json(), {"schema_version": 0, **old})


def test_a_newer_version_asks_for_an_upgrade(runs: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / METRICS_FILE).write_text(json.dumps({**unversioned(runs["grouped"]), "schema_version": 999}))
    with pytest.raises(UserError, match="upgrade medtransfer") as err:
        RunDir(tmp_path).metrics()
    assert str(tmp_path / METRICS_FILE) in err.value.line() and "999" in err.value.line()


def test_a_misspelt_key_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    data = unversioned(runs["grouped"])
    data["n_tets"] = data.pop("n_test")
    with pytest.raises(ValidationError, match="n_tets"):
        RunMetrics.model_validate(data)
    (tmp_path / METRICS_FILE).write_text(json.dumps(data))
    with pytest.raises(UserError, match="is not a run's metrics") as err:
        RunDir(tmp_path).metrics()
    assert str(tmp_path / METRICS_FILE) in err.value.line()


def test_a_misspelt_key_inside_an_interval_is_refused(runs: dict[str, Path]) -> None:
    data = unversioned(runs["grouped"])
    data["test"]["auroc"]["hi"] = data["test"]["auroc"].pop("high")
    with pytest.raises(ValidationError, match="test.auroc"):
        RunMetrics.model_validate(data)


def test_build_stamps_this_version(runs: dict[str, Path]) -> None:
    assert RunMetrics.build(unversioned(runs["knn"])).schema_version == SCHEMA_VERSION


def test_damaged_json_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / METRICS_FILE).write_text('{"test": ')
    with pytest.raises(UserError, match="not valid JSON"):
        RunDir(tmp_path).metrics()
