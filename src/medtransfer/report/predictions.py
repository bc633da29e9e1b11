"""Reading one run's prediction file into arrays (ids and labels as text, classes in column order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def read_predictions(run_dir: str | Path, split: str = "test") -> pd.DataFrame:
    """One split of a run's predictions.csv, ids and labels as text, sorted by sample_id."""
    text = {"sample_id": str, "group": str, "split": str, "label": str, "predicted": str}
    frame = pd.read_csv(Path(run_dir) / "predictions.csv", dtype=text, keep_default_na=False, na_values={"group": [""]})
    return frame[frame["split"] == split].sort_values("sample_id").reset_index(drop=True)


def class_names(predictions: pd.DataFrame) -> list[str]:
    """The classes in column order (predictions.csv has one prob_<class> column per class)."""
    return [c.removeprefix("prob_") for c in predictions.columns if c.startswith("prob_")]


def label_arrays(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(y as class indices, probabilities (n, K), class names) from a split of predictions.csv."""
    classes = class_names(predictions)
    y = predictions["label"].map({name: k for k, name in enumerate(classes)}).to_numpy()
    return y, predictions[[f"prob_{c}" for c in classes]].to_numpy(dtype=float), classes
