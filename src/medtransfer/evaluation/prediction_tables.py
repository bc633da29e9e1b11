"""Per-sample and per-patient predictions of a run's val and test splits, as the run directory stores them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medtransfer.data.table import SampleTable
from medtransfer.evaluation.metrics import predicted_labels
from medtransfer.evaluation.patients import PatientPredictions, pool_by_patient

EVAL_SPLITS = ("val", "test")


def patient_predictions(frame: pd.DataFrame, rows: dict[str, np.ndarray], probs: dict[str, np.ndarray],
                        how: str) -> dict[str, PatientPredictions]:
    """Image probabilities pooled per patient (group), for val and test."""
    y, groups = frame["target"].to_numpy(), frame["group"].to_numpy()
    return {s: pool_by_patient(groups[rows[s]], y[rows[s]], probs[s], how) for s in EVAL_SPLITS}


def _block(table: SampleTable, part: pd.DataFrame, split: str, probs: np.ndarray, threshold: float | None,
           metadata: list[str]) -> pd.DataFrame:
    block = pd.DataFrame({"sample_id": part["sample_id"].values, "group": part["group"].values, "split": split,
                          "label": part["label"].values,
                          "predicted": [table.classes[k] for k in probs.argmax(1)]})
    if threshold is not None:  # the calls behind sensitivity, specificity, PPV and NPV, so they can be redone
        block["predicted_at_threshold"] = [table.classes[k] for k in predicted_labels(probs, threshold)]
    for column in metadata:  # the raw values, so that `medtransfer report` can redo the subgroup analysis
        block[column] = part[column].values if column in part else None
    for k, name in enumerate(table.classes):  # last, as the contract has them: the positive class's at the end
        block[f"prob_{name}"] = probs[:, k]
    return block


def prediction_table(table: SampleTable, frame: pd.DataFrame, rows: dict[str, np.ndarray],
                     probs: dict[str, np.ndarray], threshold: float | None = None,
                     external: Sequence[tuple[str, SampleTable, np.ndarray]] = ()) -> pd.DataFrame:
    """One row per val/test sample, then per external sample (split `external:NAME`): id, group, split, label,
    predicted class (argmax; binary tasks also at the val threshold), the subgroup metadata columns and every class
    probability."""
    metadata = table.metadata_columns
    parts = [_block(table, frame.iloc[rows[split]], split, probs[split], threshold, metadata) for split in EVAL_SPLITS]
    parts += [_block(table, other.frame, split, prob, threshold, metadata) for split, other, prob in external]
    return pd.concat(parts, ignore_index=True)


def patient_table(table: SampleTable, pooled: dict[str, PatientPredictions]) -> pd.DataFrame:
    """One row per val/test patient: the pooled prediction and how many images it pools."""
    parts = []
    for split, p in pooled.items():
        block = pd.DataFrame({"group": p.ids, "split": split, "label": [table.classes[k] for k in p.y],
                              "predicted": [table.classes[k] for k in p.prob.argmax(1)], "n_images": p.n_images})
        for k, name in enumerate(table.classes):
            block[f"prob_{name}"] = p.prob[:, k]
        parts.append(block)
    return pd.concat(parts, ignore_index=True)
