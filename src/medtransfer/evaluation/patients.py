"""Patient-level predictions: slice (or image) probabilities pooled per patient, one grade per patient."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PatientPredictions:
    """One row per patient: id, true label index, pooled class probabilities and the number of images."""

    ids: np.ndarray
    y: np.ndarray
    prob: np.ndarray
    n_images: np.ndarray


def pool_by_patient(groups: np.ndarray, y: np.ndarray, prob: np.ndarray, how: str = "mean") -> PatientPredictions:
    """Pool per patient: mean probability, per-class maximum (renormalised), or the share of slice votes.

    A patient's label is the most frequent of its images' labels (in a grading task they are all the same).
    """
    frame = pd.DataFrame(prob, columns=range(prob.shape[1]))
    if how == "vote":
        frame = pd.DataFrame(np.eye(prob.shape[1])[prob.argmax(axis=1)], columns=frame.columns)
    grouped = frame.groupby(groups, sort=True)
    pooled = (grouped.max() if how == "max" else grouped.mean()).to_numpy()
    pooled = pooled / pooled.sum(axis=1, keepdims=True)
    labels = pd.Series(y).groupby(groups, sort=True).agg(lambda s: s.value_counts().index[0])
    sizes = pd.Series(y).groupby(groups, sort=True).size()
    return PatientPredictions(labels.index.to_numpy(), labels.to_numpy(), pooled, sizes.to_numpy())
