"""Reading one run's prediction file into arrays (ids and labels as text, classes in column order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.rundir import RunDir


def read_predictions(run_dir: str | Path, split: str = "test") -> pd.DataFrame:
    """One split of a run's per-sample predictions, ids and labels as text, sorted by sample_id."""
    return RunDir(Path(run_dir)).predictions(split).sort_values("sample_id").reset_index(drop=True)


def class_names(predictions: pd.DataFrame) -> list[str]:
    """The classes in column order (the predictions have one prob_<class> column per class)."""
    return [c.removeprefix("prob_") for c in predictions.columns if c.startswith("prob_")]


def label_arrays(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(y as class indices, probabilities (n, K), class names) from a split of the predictions."""
    classes = class_names(predictions)
    y = predictions["label"].map({name: k for k, name in enumerate(classes)}).to_numpy()
    return y, predictions[[f"prob_{c}" for c in classes]].to_numpy(dtype=float), classes
