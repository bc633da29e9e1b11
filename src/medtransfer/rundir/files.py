"""The names of a run directory's files, declared once: everything else reads and writes them through RunDir and
RunWriter, or names them with these constants."""

from __future__ import annotations

from typing import Literal, get_args

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
PATIENTS_FILE = "patient_predictions.csv"
HISTORY_FILE = "history.csv"
ENVIRONMENT_FILE = "environment.json"  # provenance: versions, git commit, device, command line, seed, threads
LOG_FILE = "train.log"  # what the run printed
# --tracker: TensorBoard events (`tensorboard --logdir RUN/tensorboard`) or the local MLflow store
# (`mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db`)
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DB = "mlflow.db"
DONE = "DONE"  # written last: a run dir without it is incomplete

# The trained weights: the whole fine-tuned model, a frozen probe's head, or a kNN probe's bank of train features.
WeightsKind = Literal["model", "head", "knn"]
WEIGHTS_KINDS: tuple[WeightsKind, ...] = get_args(WeightsKind)


def weights_file(kind: WeightsKind) -> str:
    """The file name of one kind of trained weights, e.g. `head.safetensors`."""
    if kind not in WEIGHTS_KINDS:
        raise ValueError(f"weights kind must be one of {WEIGHTS_KINDS}, got {kind!r}")
    return f"{kind}.safetensors"
