"""Stratified, grouped, seeded splits: no patient or lesion is ever in two splits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medtransfer.data.table import SPLITS, SampleTable
from medtransfer.errors import UserError

UNUSED = "unused"  # rows dropped by --train-fraction


@dataclass(frozen=True, kw_only=True)
class SplitPlan:
    """How to split: test is a fraction of all data, val a fraction of what remains for training.

    Fields are named as TrainConfig's, which holds their defaults: build it with `config.from_config`.
    """

    test_fraction: float
    val_fraction: float
    train_fraction: float
    split_seed: int
    folds: int  # >= 2: k-fold cross-validation with `fold` held out
    fold: int
    allow_missing_classes: bool  # a class too rare for some split is left out there (a warning), not refused


def group_keys(frame: pd.DataFrame) -> pd.Series:
    """The unit that must stay together: the group when given, else the sample itself; with --dedup group, the
    groups merged with the duplicate clusters (`split_group`, from data/dedup.py)."""
    if "split_group" in frame.columns:
        return frame["split_group"]
    return frame["group"].where(frame["group"].notna(), "sample:" + frame["sample_id"].astype(str))


def _groups(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's group number (groups in sorted key order), and per group its majority label and its size."""
    group, _ = pd.factorize(group_keys(frame), sort=True)
    label, names = pd.factorize(frame["label"], sort=True)
    width = max(len(names), 1)
    pair, n = np.unique(group * width + label, return_counts=True)  # sorted by group, then label
    of, lab = np.divmod(pair, width)
    ordered = np.lexsort((-n, of))  # per group the most frequent label first, ties to the first label
    _, top = np.unique(of[ordered], return_index=True)
    return group, names.to_numpy()[lab[ordered][top]], np.bincount(of, weights=n, minlength=len(top)).astype(int)


def _by_class(majority: np.ndarray, rng: np.random.Generator):
    """Per class in label order, its groups in random order; the same draws for the same seed."""
    for label in sorted(set(majority)):
        yield rng.permutation(np.flatnonzero(majority == label))


def carve(frame: pd.DataFrame, fraction: float, rng: np.random.Generator, keep: int = 1,
          at_least_one: bool = False) -> pd.Series:
    """Pick about `fraction` of the rows, whole groups at a time, stratified by each group's majority label.

    Per class, `keep` groups stay behind, and with `at_least_one` a class of two or more groups gives one even
    when the fraction is small (taking it before keeping a second group: a class in test matters more than in
    val). Written by hand because sklearn's splitters promise neither.
    """
    group, majority, sizes = _groups(frame)
    chosen: list[np.ndarray] = []
    for order in _by_class(majority, rng):
        sized = sizes[order]
        free = len(order) - keep  # how many groups may go
        if at_least_one:
            free = max(free, min(1, len(order) - 1))
        target, taken = fraction * sized.sum(), 0
        take = np.zeros(len(order), dtype=bool)
        for i in range(max(free, 0)):
            if abs(taken + sized[i] - target) < abs(taken - target):  # take it when it brings us closer
                take[i], taken = True, taken + sized[i]
        if at_least_one and free > 0 and not take.any():  # the group closest to the target size
            take[np.argmin(np.abs(sized[:free] - target))] = True
        chosen.append(order[take])
    return pd.Series(np.isin(group, np.concatenate(chosen or [np.empty(0, int)])), index=frame.index)


def missing_classes(frame: pd.DataFrame, classes: list[str]) -> dict[str, list[str]]:
    """Split -> the classes with no sample there, for the splits that lack any (empty when all is well)."""
    present = frame.groupby("split")["label"].agg(set)
    out = {split: [c for c in classes if c not in present.get(split, set())] for split in SPLITS}
    return {split: names for split, names in out.items() if names}


def assign_splits(table: SampleTable, plan: SplitPlan) -> pd.DataFrame:
    """Return the table's frame with every row's split set (train/val/test, or unused)."""
    frame = table.frame.copy()
    rng = np.random.default_rng(plan.split_seed)
    given = frame["split"].notna()
    if given.any() and not given.all():
        raise UserError(table.source, f"{int((~given).sum())} rows have no split while others do",
                        "give every row a split, or none")
    _check_predefined_groups(frame, table.source)
    # The splits made here, where a class too rare to reach them is ours to report; predefined ones are the user's.
    made = set(SPLITS) - set(frame["split"].dropna())
    if not given.any():
        frame["split"] = "train"
    held, gaps = None, {}
    if plan.folds >= 2:
        held, gaps = _hold_out_fold(frame, plan, rng, table.source)
        made |= {held, "val"}
    if not (frame["split"] == "test").any():
        pool = frame["split"] == "train"
        keep = 1 + (not (frame["split"] == "val").any())  # leave a group of each class for val and for train
        picked = carve(frame[pool], plan.test_fraction, rng, keep=keep, at_least_one=True).to_numpy()
        frame.loc[pool[pool].index[picked], "split"] = "test"
    if not (frame["split"] == "val").any():
        pool = frame["split"] == "train"
        picked = carve(frame[pool], plan.val_fraction, rng, at_least_one=True).to_numpy()
        frame.loc[pool[pool].index[picked], "split"] = "val"
    if plan.train_fraction < 1.0:
        pool = frame["split"] == "train"
        _refuse_tiny_train_fraction(frame[pool], plan.train_fraction, table.source)
        drop = carve(frame[pool], 1.0 - plan.train_fraction, rng).to_numpy()
        frame.loc[pool[pool].index[drop], "split"] = UNUSED
    _check_result(frame, table, plan, made, (held, gaps))
    return frame


def _refuse_tiny_train_fraction(train: pd.DataFrame, fraction: float, source: str) -> None:
    """A fraction that leaves under one training sample per class is a typo (0.001 for 0.1), not a learning curve.

    Carving would still keep a group of each class, so without this the run would train on a handful of samples
    and report it with a confident CI.
    """
    n, classes = len(train), train["label"].nunique()
    kept = fraction * n
    if round(kept) >= classes:
        return
    lowest = math.ceil(classes / n * 1000) / 1000  # the smallest fraction (3 decimals) leaving one per class
    raise UserError(source, f"--train-fraction {fraction:g} would leave {kept:.2g} of the {n} training samples, "
                    f"fewer than one per class ({classes} classes)",
                    f"use --train-fraction {lowest:g} or more, or 1 to train on all of them")


def _fold_of(frame: pd.DataFrame, folds: int, rng: np.random.Generator) -> pd.Series:
    """Each row's fold: per class, largest groups first, each to the fold holding fewest samples of that class.

    An empty fold is always the emptiest, so a class with at least `folds` groups reaches every fold; ties go to
    the fold with fewest samples overall, then at random. (sklearn's StratifiedGroupKFold does not promise that.)
    """
    group, majority, sizes = _groups(frame)
    fold_of = np.zeros(len(sizes), dtype=int)
    total = np.zeros(folds)
    for order in _by_class(majority, rng):
        order = order[np.argsort(-sizes[order], kind="stable")]
        mine, tiebreak = np.zeros(folds), rng.permutation(folds)
        for g in order:
            fold = min(range(folds), key=lambda f: (mine[f], total[f], tiebreak[f]))
            fold_of[g] = fold
            mine[fold] += sizes[g]
            total[fold] += sizes[g]
    return pd.Series(fold_of[group], index=frame.index)


def _hold_out_fold(frame: pd.DataFrame, plan: SplitPlan, rng: np.random.Generator,
                   source: str) -> tuple[str, dict[str, int]]:
    """Cross-validation: fold `fold` of k stratified, grouped folds becomes test (or val, when test is given).

    Returns the held split and, per class, how many of the k held-out folds lack it (classes with fewer than k
    groups cannot be in all of k disjoint folds).
    """
    held = "val" if (frame["split"] == "test").any() else "test"
    pool = frame.index[frame["split"].isin(["train", "val"])] if held == "val" else frame.index
    part = frame.loc[pool]
    n_groups = group_keys(part).nunique()
    if n_groups < plan.folds:
        raise UserError(source, f"cannot make {plan.folds} folds from {n_groups} groups", "use fewer folds")
    fold = _fold_of(part, plan.folds, rng)
    seen = pd.crosstab(part["label"], fold) > 0
    lacking = (~seen).sum(axis=1)
    frame.loc[pool, "split"] = "train"
    frame.loc[pool[(fold == plan.fold).to_numpy()], "split"] = held
    return held, {str(label): int(n) for label, n in lacking.items() if n}


def _check_predefined_groups(frame: pd.DataFrame, source: str) -> None:
    both = frame.dropna(subset=["group", "split"]).groupby("group")["split"].nunique()
    if (both > 1).any():
        raise UserError(source, f"group {both[both > 1].index[0]!r} is in more than one predefined split "
                        f"({int((both > 1).sum())} such groups)", "fix the split column so each patient is in one split")


def _check_result(frame: pd.DataFrame, table: SampleTable, plan: SplitPlan, made: set[str],
                  folds: tuple[str | None, dict[str, int]]) -> None:
    for split in SPLITS:
        if not (frame["split"] == split).any():
            raise UserError(table.source, f"the {split} split is empty (too few samples or groups to split)",
                            "add data, or change --test-fraction/--val-fraction")
    if not plan.allow_missing_classes:
        _refuse_missing(frame, table, plan, made, folds)
    for split in ("val", "test"):
        part = frame[frame["split"] == split]
        if part["label"].nunique() < 2:
            raise UserError(table.source, f"the {split} split holds one class only ({part['label'].iloc[0]!r})",
                            "add data of the other classes, or change the split fractions or --split-seed")
    absent = sorted(set(table.classes) - set(frame.loc[frame["split"] == "train", "label"]))
    if absent:
        raise UserError(table.source, f"class(es) {absent} have no training samples", "add training samples of them")


def _refuse_missing(frame: pd.DataFrame, table: SampleTable, plan: SplitPlan, made: set[str],
                    folds: tuple[str | None, dict[str, int]]) -> None:
    """One line naming each class that a split made here lacks (or that some held-out folds lack), and the fix."""
    held, gaps = folds  # the fold's held-out split; class -> how many held-out folds lack it
    where: dict[str, list[str]] = {name: [f"{n} of the {plan.folds} held-out {held} folds"] for name, n in gaps.items()}
    for split, names in missing_classes(frame, table.classes).items():
        for name in names:
            if split in made and split != "train" and not (name in gaps and split == held):
                where.setdefault(name, []).append(split)
    if not where:
        return
    units = group_keys(table.frame)
    described = []
    for name in [c for c in table.classes if c in where]:
        rows = table.frame["label"] == name
        samples = _count(int(rows.sum()), "sample")
        count = f"{_count(int(units[rows].nunique()), 'group')}, {samples}" if table.has_groups else samples
        described.append(f"{name!r} ({count}) is not in {', '.join(where[name])}")
    fewest = min(int(units[table.frame["label"] == name].nunique()) for name in where)
    # k folds need k groups of a class; below 3 no fold count helps, as train, val and test each need one
    it = "it" if len(where) == 1 else "them"
    fix = f"use --folds {fewest} or fewer, or add data of {it}" if plan.folds >= 2 and fewest >= 3 else \
        f"add data of {it} (train, val and test each need a group of every class: 3 groups at least)"
    raise UserError(table.source, f"class(es) too rare to place in every split: {'; '.join(described)}",
                    f"{fix}, or pass --allow-missing-classes to go on and record {it} as a warning")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + "s" * (n != 1)
