"""Reading runs' prediction files into arrays (ids and labels as text, classes in column order)."""

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



def pools_out_of_fold(setup: pd.DataFrame) -> bool:
    """Whether a setup's folds each held out their own test part (pooled out of fold), rather than val with one
    predefined test split that every fold shares (then the folds are replicates, like seeds)."""
    if int(setup["folds"].iloc[0]) < 2:
        return False
    first = setup[setup["seed"] == setup["seed"].min()].sort_values("fold")
    ids = [set(read_predictions(d)["sample_id"]) for d in first["run_dir"].iloc[:2]]
    return len(ids) < 2 or ids[0] != ids[1]


def representative_predictions(runs: pd.DataFrame) -> list[tuple[pd.Series, pd.DataFrame, bool]]:
    """Per setup, for per-setup figures: (first run, test predictions, folds pooled) of the lowest seed at the largest
    train fraction; a cross-validated setup's held-out folds are concatenated, so its figure covers every sample."""
    full = runs[runs["train_fraction"] == runs["train_fraction"].max()]
    out = []
    for _, setup in full.groupby("setup", sort=True):
        pooled = pools_out_of_fold(setup)
        mine = setup[setup["seed"] == setup["seed"].min()].sort_values("fold")
        dirs = mine["run_dir"] if pooled else mine["run_dir"].iloc[:1]
        frame = pd.concat([read_predictions(d) for d in dirs]).sort_values("sample_id").reset_index(drop=True)
        out.append((mine.iloc[0], frame, pooled))
    return out
