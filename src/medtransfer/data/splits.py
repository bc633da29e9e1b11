"""Stratified, grouped, seeded splits: no patient or lesion is ever in two splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medtransfer.data.table import SPLITS, SampleTable
from medtransfer.errors import UserError

UNUSED = "unused"  # rows dropped by --train-fraction


@dataclass(frozen=True)
class SplitPlan:
    """How to split: test is a fraction of all data, val a fraction of what remains for training."""

    test_fraction: float = 0.2
    val_fraction: float = 0.2
    train_fraction: float = 1.0
    seed: int = 0
    folds: int = 0  # >= 2: k-fold cross-validation with `fold` held out
    fold: int = 0


def group_keys(frame: pd.DataFrame) -> pd.Series:
    """The unit that must stay together: the group when given, else the sample itself."""
    return frame["group"].where(frame["group"].notna(), "sample:" + frame["sample_id"].astype(str))


def carve(frame: pd.DataFrame, fraction: float, rng: np.random.Generator) -> pd.Series:
    """Pick about `fraction` of the rows, whole groups at a time, stratified by each group's majority label.

    Written by hand because sklearn's StratifiedGroupKFold only yields 1/k folds and may leave a class
    with one group entirely out of the remainder; here every class keeps at least one group behind.
    """
    keys = group_keys(frame)
    pairs = pd.DataFrame({"key": keys.to_numpy(), "label": frame["label"].to_numpy()})
    counts = pairs.groupby(["key", "label"], sort=True).size().rename("n").reset_index()
    sizes = counts.groupby("key")["n"].sum()
    majority = counts.sort_values("n", ascending=False, kind="stable").drop_duplicates("key").set_index("key")["label"]
    chosen: list = []
    for label in sorted(majority.unique()):
        groups = np.sort(majority.index[majority.to_numpy() == label].to_numpy())
        order = rng.permutation(groups)
        sized = sizes.loc[order].to_numpy()
        target, taken = fraction * sized.sum(), 0
        for group, size in zip(order[:-1], sized[:-1], strict=True):  # the last group always stays behind
            if abs(taken + size - target) < abs(taken - target):  # take it when it brings us closer
                chosen.append(group)
                taken += size
    return keys.isin(chosen)


def assign_splits(table: SampleTable, plan: SplitPlan) -> pd.DataFrame:
    """Return the table's frame with every row's split set (train/val/test, or unused)."""
    frame = table.frame.copy()
    rng = np.random.default_rng(plan.seed)
    given = frame["split"].notna()
    if given.any() and not given.all():
        raise UserError(table.source, f"{int((~given).sum())} rows have no split while others do",
                        "give every row a split, or none")
    _check_predefined_groups(frame, table.source)
    if not given.any():
        frame["split"] = "train"
    if plan.folds >= 2:
        _hold_out_fold(frame, plan, table.source)
    if not (frame["split"] == "test").any():
        pool = frame["split"] == "train"
        frame.loc[pool[pool].index[carve(frame[pool], plan.test_fraction, rng).to_numpy()], "split"] = "test"
    if not (frame["split"] == "val").any():
        pool = frame["split"] == "train"
        frame.loc[pool[pool].index[carve(frame[pool], plan.val_fraction, rng).to_numpy()], "split"] = "val"
    if plan.train_fraction < 1.0:
        pool = frame["split"] == "train"
        drop = carve(frame[pool], 1.0 - plan.train_fraction, rng).to_numpy()
        frame.loc[pool[pool].index[drop], "split"] = UNUSED
    _check_result(frame, table)
    return frame


def _hold_out_fold(frame: pd.DataFrame, plan: SplitPlan, source: str) -> None:
    """Cross-validation: fold `fold` of k stratified, grouped folds becomes test (or val, when test is given)."""
    from sklearn.model_selection import StratifiedGroupKFold

    held = "val" if (frame["split"] == "test").any() else "test"
    pool = frame.index[frame["split"].isin(["train", "val"])] if held == "val" else frame.index
    part = frame.loc[pool]
    folds = StratifiedGroupKFold(n_splits=plan.folds, shuffle=True, random_state=plan.seed)
    try:
        _, held_rows = list(folds.split(part, part["label"], group_keys(part)))[plan.fold]
    except ValueError as exc:
        raise UserError(source, f"cannot make {plan.folds} folds ({exc})", "use fewer folds") from None
    frame.loc[pool, "split"] = "train"
    frame.loc[pool[held_rows], "split"] = held


def _check_predefined_groups(frame: pd.DataFrame, source: str) -> None:
    both = frame.dropna(subset=["group", "split"]).groupby("group")["split"].nunique()
    if (both > 1).any():
        raise UserError(source, f"group {both[both > 1].index[0]!r} is in more than one predefined split "
                        f"({int((both > 1).sum())} such groups)", "fix the split column so each patient is in one split")


def _check_result(frame: pd.DataFrame, table: SampleTable) -> None:
    for split in SPLITS:
        part = frame[frame["split"] == split]
        if part.empty:
            raise UserError(table.source, f"the {split} split is empty (too few samples or groups to split)",
                            "add data, or change --test-fraction/--val-fraction")
        if split != "train" and part["label"].nunique() < 2:
            raise UserError(table.source, f"the {split} split holds one class only ({part['label'].iloc[0]!r})",
                            "add data of the other classes, or change the split fractions or --seed")
    absent = sorted(set(table.classes) - set(frame.loc[frame["split"] == "train", "label"]))
    if absent:
        raise UserError(table.source, f"class(es) {absent} have no training samples", "add training samples of them")
