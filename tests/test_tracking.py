"""--tracker: what TensorBoard and MLflow read back equals the history rows, settings and final metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtransfer import tracking
from medtransfer.errors import Interrupted, UserError

pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")

PARAMS = {"backbone": "resnet18", "lr": 1e-3, "epochs": 5, "weights": {"source": "none", "revision": None}}
FINAL = {"test_auroc": 0.8765432101, "test_accuracy": 0.75}


def history(tmp: Path, epochs: int = 5, seed: int = 0) -> pd.DataFrame:
    """A history.csv as a fine-tune writes it (random values, seconds in the thousands), read back by pandas."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "epoch": np.arange(1, epochs + 1), "train_loss": rng.uniform(0.1, 2, epochs),
        "val_loss": rng.uniform(0.1, 2, epochs), "val_metric": rng.uniform(0.5, 1, epochs),
        "lr": rng.uniform(1e-6, 1e-2, epochs), "train_images_per_second": rng.uniform(10, 5000, epochs),
        "seconds": np.cumsum(rng.uniform(100, 900, epochs)),
    })
    frame.to_csv(tmp / "history.csv", index=False)
    return pd.read_csv(tmp / "history.csv")


def feed(kind: str, folder: Path, frame: pd.DataFrame, knn: pd.DataFrame | None = None) -> None:
    """Log settings, every history row and the final metrics through the context manager, as a run does."""
    with tracking.tracking(kind, folder, "resnet18-finetune-s0", experiment="synthetic") as tracker:
        tracker.log_params(PARAMS)
        for row in frame.to_dict("records"):
            tracker.log_epoch(row)
        for row in [] if knn is None else knn.to_dict("records"):
            tracker.log_epoch(row)
        tracker.log_final(FINAL)


def knn_history() -> pd.DataFrame:
    """A kNN probe's history: one row per k, no epoch."""
    return pd.DataFrame({"k": [5, 10, 20], "val_loss": [0.61, 0.55, 0.58], "val_metric": [0.71, 0.74, 0.72]})


def renamed(folder: Path) -> Path:
    """The staging folder moved to its final name, as RunWriter does at the end of a run."""
    final = folder.with_name(folder.name.removesuffix(".staging"))
    folder.rename(final)
    return final


def assert_logged(logged: list, steps: pd.Series, values: pd.Series) -> None:
    """TensorBoard events or MLflow metrics have exactly these steps and, to 1e-6, these values."""
    assert [point.step for point in logged] == steps.tolist()
    assert [point.value for point in logged] == pytest.approx(values.tolist(), rel=1e-6, abs=1e-6)


def test_tensorboard_scalars_equal_history(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    frame, knn, staging = history(tmp_path), knn_history(), tmp_path / "run.staging"
    feed("tensorboard", staging, frame, knn)
    events = EventAccumulator(str(renamed(staging) / tracking.TENSORBOARD_DIR))
    events.Reload()
    for column in frame.columns.drop("epoch"):
        assert_logged(events.Scalars(column), frame["epoch"], frame[column])
    for column in ("val_loss", "val_metric"):
        assert_logged(events.Scalars(f"knn/{column}"), knn["k"], knn[column])
    for name, value in FINAL.items():
        assert events.Scalars(name)[0].value == pytest.approx(value, rel=1e-6)
    (text,) = events.Tensors("params/text_summary")  # the settings as a Markdown table
    assert "| backbone | resnet18 |" in text.tensor_proto.string_val[0].decode()
    assert "| weights.source | none |" in text.tensor_proto.string_val[0].decode()
    assert set(events.PluginTagToContent("hparams")) >= {"_hparams_/experiment", "_hparams_/session_start_info"}


def open_files() -> list[str]:
    """Paths this process holds open (Linux; empty elsewhere)."""
    folder = Path("/proc/self/fd")
    paths = []
    for fd in folder.iterdir() if folder.exists() else ():
        try:
            paths.append(os.readlink(fd))
        except OSError:  # the descriptor listing the folder itself is gone by now
            continue
    return paths


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory: pytest.TempPathFactory):
    """One MLflow run in the run folder's own store, read back after the folder was renamed."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow")
    frame, knn, staging = history(tmp), knn_history(), tmp / "run.staging"
    feed("mlflow", staging, frame, knn)
    assert not any(str(staging) in path for path in open_files())  # nothing holds the folder that is renamed
    client = MlflowClient(tracking_uri=f"sqlite:///{renamed(staging) / tracking.MLFLOW_DB}")
    experiment = client.get_experiment_by_name("synthetic")
    (run,) = client.search_runs([experiment.experiment_id])
    return client, run, frame, knn


def test_mlflow_metrics_equal_history_after_the_folder_moved(mlflow_run) -> None:
    client, run, frame, knn = mlflow_run
    for column in frame.columns.drop("epoch"):
        assert_logged(client.get_metric_history(run.info.run_id, column), frame["epoch"], frame[column])
    for column in ("val_loss", "val_metric"):
        assert_logged(client.get_metric_history(run.info.run_id, f"knn/{column}"), knn["k"], knn[column])
    assert {name: run.data.metrics[name] for name in FINAL} == pytest.approx(FINAL)


def test_mlflow_run_holds_params_name_and_finished_status(mlflow_run) -> None:
    _, run, _, _ = mlflow_run
    assert run.info.run_name == "resnet18-finetune-s0"
    assert run.info.status == "FINISHED"
    assert run.data.params == {"backbone": "resnet18", "lr": "0.001", "epochs": "5",
                               "weights.source": "none", "weights.revision": "None"}


def test_mlflow_server_uri_is_used_and_failures_are_marked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'server.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "")  # recorded by monkeypatch, so that the test leaves it as it was
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    for name, error in (("crash", RuntimeError("boom")), ("interrupt", KeyboardInterrupt()),
                        ("sigterm", Interrupted(signal.SIGTERM))):
        with pytest.raises(type(error)), tracking.tracking("mlflow", tmp_path / name, name) as tracker:
            tracker.log_epoch({"epoch": 1, "train_loss": 0.5})
            raise error
    assert not any(tmp_path.glob(f"*/{tracking.MLFLOW_DB}"))  # nothing written to the run folders
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"  # no usage data sent unless the user allows it
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("medtransfer").experiment_id])
    assert {r.info.run_name: r.info.status for r in runs} == {"crash": "FAILED", "interrupt": "KILLED",
                                                              "sigterm": "KILLED"}  # the CLI's signal handler


def test_an_unreachable_server_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: refused at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(UserError, match="MLFLOW_TRACKING_URI=http://127.0.0.1:9.*start the server"):
        with tracking.tracking("mlflow", tmp_path, "run"):
            pass


@pytest.mark.parametrize("kind", ["mlflow", "tensorboard"])
def test_a_missing_extra_names_it(kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def import_module(name: str):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(tracking, "import_module", import_module)
    with pytest.raises(UserError) as caught, tracking.tracking(kind, tmp_path, "run"):
        pass
    assert f"--tracker {kind}" in caught.value.line()
    assert f"[{kind}] extra" in caught.value.line() and f"pip install 'medtransfer[{kind}]'" in caught.value.line()
    tracking.check_tracker("none")  # nothing to import, nothing to fail


def test_none_tracks_nothing_and_imports_neither_library(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from medtransfer.tracking import tracking\n"
            f"with tracking('none', Path({str(tmp_path)!r}), 'run') as tracker: assert tracker is None\n"
            "print(sorted(m for m in ('mlflow', 'tensorboard', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert not any(tmp_path.iterdir())


def test_rows_become_steps_and_numeric_scalars() -> None:
    assert tracking.scalars({"epoch": 3, "train_loss": 0.5, "note": "x", "val_loss": None}) == (3, {"train_loss": 0.5})
    assert tracking.scalars({"k": 10, "val_metric": np.float64(0.7)}) == (10, {"knn/val_metric": 0.7})
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": "None"}


@pytest.mark.parametrize("kind", ["tensorboard", "mlflow"])
def test_a_run_logs_what_its_history_csv_holds(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through `train` itself: every history.csv row and the run's test metrics, read back from the run folder."""
    from medtransfer import TrainConfig, train
    from medtransfer.config import task_name

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = TrainConfig(data="synthetic:n=60,size=16,seed=1", backbone="resnet18", weights="none", image_size=16,
                      epochs=4, bootstrap=100, workers=0, cache_dir=str(tmp_path / "cache"), tracker=kind,
                      out=str(tmp_path / "run"))
    result = train(cfg)
    saved = result.run_dir.history()
    columns = [c for c in saved.columns if c != "epoch" and saved[c].notna().all()]
    assert len(saved) == 4 and {"train_loss", "val_loss", "val_metric"} <= set(columns)
    if kind == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(result.run_dir.path / tracking.TENSORBOARD_DIR))
        events.Reload()
        logged = {column: events.Scalars(column) for column in columns}
        test_auroc = events.Scalars("test_auroc")[0].value
    else:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{result.run_dir.path / tracking.MLFLOW_DB}")
        experiment = client.get_experiment_by_name(task_name(cfg.task, cfg.data))  # one experiment per task
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED" and run.data.params["backbone"] == "resnet18"
        logged = {column: client.get_metric_history(run.info.run_id, column) for column in columns}
        test_auroc = run.data.metrics["test_auroc"]
    for column in columns:
        assert_logged(logged[column], saved["epoch"], saved[column])
    assert test_auroc == pytest.approx(result.metrics.test["auroc"].value, rel=1e-6)
