"""Experiment tracking (`--tracker tensorboard|mlflow`): per-epoch curves, settings and final metrics.

Both libraries are optional extras and load only when a run asks for one: `--tracker none` imports neither.
The module knows nothing of the runner; the runner feeds it history rows as they are made.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import import_module
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from medtransfer.errors import Interrupted, UserError
from medtransfer.rundir.files import MLFLOW_DB, TENSORBOARD_DIR

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# What each extra must make importable. MLflow's local store is SQLite (MLflow 3 refuses its old file store
# unless told otherwise), which mlflow-skinny offers only with SQLAlchemy and Alembic installed.
EXTRA_MODULES = {
    "tensorboard": ("tensorboard", "torch.utils.tensorboard"),
    "mlflow": ("mlflow", "sqlalchemy", "alembic"),
}
QUIET_LOGGERS = ("mlflow", "alembic")  # their INFO lines (database creation, migrations) are not the user's news
PARAMS_PER_BATCH = 100  # MLflow's limit on params in one log_batch call


class Tracker(Protocol):
    """Where a run's settings, per-epoch rows and final metrics are also logged."""

    def log_params(self, params: dict[str, Any]) -> None:
        """The run's resolved settings (nested dicts are flattened to dotted keys)."""

    def log_epoch(self, row: dict[str, Any]) -> None:
        """One history row as it goes into history.csv (a kNN row has 'k' in place of 'epoch')."""

    def log_final(self, metrics: dict[str, float]) -> None:
        """Final metrics, e.g. {'test_auroc': 0.93}."""

    def close(self, failed: BaseException | None = None) -> None:
        """Flush and end the run."""


def check_tracker(kind: str) -> None:
    """Fail early, before the long work, with the pip extra to install when `kind`'s library is missing."""
    for module in EXTRA_MODULES.get(kind, ()):
        try:
            import_module(module)
        except ImportError as error:
            raise UserError(f"--tracker {kind}", f"needs the [{kind}] extra ({error.name or module} is missing)",
                            f"pip install 'medtransfer[{kind}]'") from None


@contextmanager
def tracking(kind: str, folder: Path, run_name: str, experiment: str = "medtransfer",
             final: Path | None = None) -> Iterator[Tracker | None]:
    """A tracker of `kind` logging under `folder` (the run's staging folder, renamed to `final` when the run is
    committed) for the block's duration; None for 'none'.

    An MLflow run ends FINISHED, or FAILED (KILLED on Ctrl-C) when the block raises.
    """
    if kind == "none":
        yield None
        return
    check_tracker(kind)
    tracker = (TensorBoardTracker(folder) if kind == "tensorboard"
               else MlflowTracker(folder, run_name, experiment, final or folder))
    try:
        yield tracker
    except BaseException as error:
        tracker.close(failed=error)
        raise
    tracker.close()


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level of dotted keys; values other than str, bool, int and float become strings."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str | bool | int | float) else str(value)
    return flat


def scalars(row: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
    """A history row as (step, {tag: value}): step is the epoch, or k with tags under 'knn/' for a kNN row."""
    key, prefix = ("k", "knn/") if "k" in row and "epoch" not in row else ("epoch", "")
    values = {f"{prefix}{name}": float(value) for name, value in row.items()
              if name != key and isinstance(value, Real) and not isinstance(value, bool)}
    return int(row[key]), values


class TensorBoardTracker:
    """Scalars per epoch, settings as text and as the HParams dashboard, final metrics: in RUN/tensorboard/."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / TENSORBOARD_DIR))
        self.params: dict[str, Any] = {}

    def log_params(self, params: dict[str, Any]) -> None:
        """Settings as a Markdown table under 'params' (kept for the HParams entry written with the metrics)."""
        self.params = flatten(params)
        table = "\n".join(f"| {key} | {value} |" for key, value in self.params.items())
        self.writer.add_text("params", "| setting | value |\n|---|---|\n" + table)

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Each numeric column of the row as a scalar at step = epoch (kNN: k)."""
        step, values = scalars(row)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def log_final(self, metrics: dict[str, float]) -> None:
        """Final metrics as scalars, and with the settings as one HParams row (in this run's own folder)."""
        from torch.utils.tensorboard.summary import hparams

        for tag, value in metrics.items():
            self.writer.add_scalar(tag, float(value), global_step=0)
        # SummaryWriter.add_hparams would open a second, time-stamped run folder; write the summaries here.
        for summary in hparams(self.params, {tag: float(value) for tag, value in metrics.items()}):
            self.writer.file_writer.add_summary(summary)

    def close(self, failed: BaseException | None = None) -> None:
        """Flush the event file to disk (TensorBoard has no run status)."""
        self.writer.close()


class MlflowTracker:
    """One MLflow run: in MLFLOW_TRACKING_URI's server when set, else in RUN/mlflow.db (SQLite)."""

    def __init__(self, folder: Path, run_name: str, experiment: str, final: Path) -> None:
        # MLflow 3 sends usage telemetry from a background thread unless told not to; hospital clusters are often
        # offline and their data governance expects no outbound traffic. A user's own setting wins.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        server = os.environ.get("MLFLOW_TRACKING_URI")
        with quiet_mlflow():
            from mlflow.exceptions import MlflowException

            self.client = mlflow_client(server, folder)
            try:
                # The store records the artifact folder's absolute path: the run folder's final one, not staging's.
                experiment_id = self._experiment(experiment, None if server else final / "mlartifacts")
                self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
            except MlflowException as error:
                if not server:
                    raise  # our own SQLite file failing is a bug, not bad input
                raise UserError(f"MLFLOW_TRACKING_URI={server}", f"MLflow refused or did not answer ({error.message})",
                                "start the server, correct the address, or unset it to log into the run "
                                "folder") from None

    def _experiment(self, name: str, artifacts: Path | None) -> str:
        """The id of the experiment called `name`, created when new (local store: artifacts under the run folder)."""
        from mlflow.exceptions import MlflowException

        if (found := self.client.get_experiment_by_name(name)) is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifacts and artifacts.resolve().as_uri())
        except MlflowException:  # another run of the study created it in between (a shared server)
            if (found := self.client.get_experiment_by_name(name)) is None:
                raise
            return found.experiment_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Settings as MLflow params, in batches of MLflow's maximum size."""
        from mlflow.entities import Param

        items = [Param(key, str(value)) for key, value in flatten(params).items()]
        with quiet_mlflow():
            for start in range(0, len(items), PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, params=items[start:start + PARAMS_PER_BATCH])

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Each numeric column of the row as a metric at step = epoch (kNN: k)."""
        step, values = scalars(row)
        self._log(values, step)

    def log_final(self, metrics: dict[str, float]) -> None:
        """Final metrics at step 0."""
        self._log({key: float(value) for key, value in metrics.items()}, 0)

    def _log(self, values: dict[str, float], step: int) -> None:
        """Metrics in one call: one database transaction per row, not one per column."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, step) for key, value in values.items()]
        with quiet_mlflow():
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, failed: BaseException | None = None) -> None:
        """End the run: FINISHED, FAILED after an exception, KILLED after Ctrl-C."""
        killed = isinstance(failed, KeyboardInterrupt | Interrupted)  # Ctrl-C, or the CLI's SIGINT/SIGTERM
        status = "FINISHED" if failed is None else "KILLED" if killed else "FAILED"
        with quiet_mlflow():
            self.client.set_terminated(self.run_id, status=status)


def mlflow_client(server: str | None, folder: Path) -> MlflowClient:
    """A client of the `server` URI when given, else of a SQLite store in `folder`."""
    from mlflow.tracking import MlflowClient

    if server:
        return MlflowClient(tracking_uri=server)
    folder.mkdir(parents=True, exist_ok=True)
    # The database file holds no path of its own, so it reads back once the staging folder is renamed; NullPool
    # closes it after every write, so no pooled connection holds the staging folder open when it is renamed.
    with environment(MLFLOW_SQLALCHEMYSTORE_POOLCLASS="NullPool"):
        return MlflowClient(tracking_uri=f"sqlite:///{(folder / MLFLOW_DB).resolve()}")


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Environment variables set for the block only, then restored as they were."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow's and Alembic's INFO lines held back (warnings still show) while MLflow works."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
