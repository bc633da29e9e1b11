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
    """Pool per patient: the mean probability, the share of slice votes, or `max`: as high a class as its highest slice.

    `max` takes, for each class c, the patient's probability of being class c or above as the maximum of that over
    its slices; a class's probability is the difference of consecutive ones. Binary: the positive probability is the
    highest slice's, the negative one 1 minus it. With more classes the top class's is also its highest slice's; the
    classes count from the table's order, lowest first, which suits graded tasks (for unordered ones use mean or
    vote). A patient's label is the most frequent of its images' labels (in a grading task they are all the same).
    """
    if how == "max":
        at_least = np.cumsum(prob[:, ::-1], axis=1)[:, ::-1]  # column c: P(class >= c), per slice
        highest = pd.DataFrame(at_least[:, 1:]).groupby(groups, sort=True).max().to_numpy()
        ones, zeros = np.ones((len(highest), 1)), np.zeros((len(highest), 1))
        # P(class >= 0) is 1; clipped, as a slice's P(class >= 1) can round a hair above it.
        pooled = np.maximum(-np.diff(np.hstack([ones, highest, zeros]), axis=1), 0.0)
    else:
        votes = np.eye(prob.shape[1])[prob.argmax(axis=1)] if how == "vote" else prob
        pooled = pd.DataFrame(votes).groupby(groups, sort=True).mean().to_numpy()
        pooled = pooled / pooled.sum(axis=1, keepdims=True)
    labels = pd.Series(y).groupby(groups, sort=True).agg(lambda s: s.value_counts().index[0])
    sizes = pd.Series(y).groupby(groups, sort=True).size()
    return PatientPredictions(labels.index.to_numpy(), labels.to_numpy(), pooled, sizes.to_numpy())
