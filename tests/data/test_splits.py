"""Splits: grouped, stratified, seeded; predefined splits respected; impossible splits are UserErrors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtransfer.data.splits import UNUSED, SplitPlan, assign_splits, carve, group_keys
from medtransfer.data.table import SPLITS, SampleTable
from medtransfer.errors import UserError

# The only failures a small but well-formed table may meet: a carved val/test split too small.
TOO_SMALL = ("split is empty", "holds one class only")


def make_table(groups: list[tuple[str, str | None, int]], grouped: bool = True) -> SampleTable:
    """groups: (label, predefined split or None, sample count) per group; group ids g000, g001, ..."""
    rows = []
    for g, (label, split, count) in enumerate(groups):
        for s in range(count):
            rows.append((f"g{g:03d}_s{s}", label, f"g{g:03d}" if grouped else None, split, f"{g}:{s}"))
    frame = pd.DataFrame(rows, columns=["sample_id", "label", "group", "split", "ref"])
    return SampleTable(frame, reader=lambda ref: np.zeros((4, 4), np.uint8), source="t", fingerprint="x")


def split_of_group(frame: pd.DataFrame) -> pd.Series:
    """Number of distinct splits each group (or ungrouped sample) lands in."""
    return frame.groupby(group_keys(frame))["split"].nunique()


def check_valid(frame: pd.DataFrame, table: SampleTable) -> None:
    assert len(frame) == len(table)
    assert frame["sample_id"].tolist() == table.frame["sample_id"].tolist()
    assert frame["split"].isin([*SPLITS, UNUSED]).all()
    assert (split_of_group(frame) == 1).all(), "a group spans two splits"
    for split in SPLITS:
        assert (frame["split"] == split).any(), f"{split} is empty"
    assert set(frame.loc[frame["split"] == "train", "label"]) == set(table.classes)
    for split in ("val", "test"):
        assert frame.loc[frame["split"] == split, "label"].nunique() >= 2


@st.composite
def tables(draw, min_groups_per_class: int = 3, max_groups: int = 60):
    n_classes = draw(st.integers(2, 4))
    n_groups = draw(st.integers(max(6, min_groups_per_class * n_classes), max(max_groups, 6)))
    # every class gets min_groups_per_class groups, the rest of the groups get random classes
    labels = [k % n_classes for k in range(min_groups_per_class * n_classes)]
    labels += draw(st.lists(st.integers(0, n_classes - 1), min_size=n_groups - len(labels),
                            max_size=n_groups - len(labels)))
    labels = draw(st.permutations(labels))
    sizes = draw(st.lists(st.integers(1, 5), min_size=n_groups, max_size=n_groups))
    grouped = draw(st.booleans()) if min_groups_per_class == 3 else True
    groups = [(f"c{label}", None, size) for label, size in zip(labels, sizes)]
    if not grouped:  # ungrouped: every sample is its own unit
        groups = [(label, None, 1) for label, _, size in groups for _ in range(size)]
    return make_table(groups, grouped=grouped)


@settings(max_examples=60, deadline=None, report_multiple_bugs=False)
@given(table=tables(), seed=st.integers(0, 2**32 - 1))
def test_random_tables_split_without_leaks(table, seed):
    plan = SplitPlan(seed=seed)
    before = table.frame.copy()
    try:
        frame = assign_splits(table, plan)
    except UserError as exc:
        # allowed only for a val/test split too small to hold two classes; train always keeps every class
        assert any(reason in exc.line() for reason in TOO_SMALL), exc.line()
        assert "train split" not in exc.line() and "no training samples" not in exc.line()
        with pytest.raises(UserError) as again:
            assign_splits(table, plan)
        assert again.value.line() == exc.line()
        return
    check_valid(frame, table)
    assert (frame["split"] != UNUSED).all()
    pd.testing.assert_frame_equal(assign_splits(table, plan), frame)  # same seed, same split
    pd.testing.assert_frame_equal(table.frame, before)  # the table itself is left alone


@settings(max_examples=30, deadline=None, report_multiple_bugs=False)
@given(table=tables(min_groups_per_class=19, max_groups=90), seed=st.integers(0, 2**32 - 1))
def test_tables_with_enough_groups_always_split(table, seed):
    """With >= 19 groups of <= 5 samples per class, test and val each get a group of every class."""
    frame = assign_splits(table, SplitPlan(seed=seed))
    check_valid(frame, table)
    for split in SPLITS:
        assert set(frame.loc[frame["split"] == split, "label"]) == set(table.classes)


def test_fractions_are_roughly_kept():
    table = make_table([(f"c{g % 2}", None, 1 + g % 3) for g in range(400)])
    frame = assign_splits(table, SplitPlan(test_fraction=0.2, val_fraction=0.25, seed=1))
    share = frame["split"].value_counts(normalize=True)
    assert share["test"] == pytest.approx(0.2, abs=0.03)
    assert share["val"] == pytest.approx(0.8 * 0.25, abs=0.03)
    assert share["train"] == pytest.approx(0.8 * 0.75, abs=0.03)


def test_seed_changes_the_split():
    table = make_table([(f"c{g % 3}", None, 2) for g in range(60)])
    a = assign_splits(table, SplitPlan(seed=0))["split"]
    b = assign_splits(table, SplitPlan(seed=1))["split"]
    assert not a.equals(b)


def test_predefined_split_is_respected():
    groups = ([("a", "train", 2)] * 5 + [("b", "train", 3)] * 5 + [("a", "val", 1)] * 2 + [("b", "val", 2)] * 2
              + [("a", "test", 2)] * 3 + [("b", "test", 1)] * 3)
    table = make_table(groups)
    frame = assign_splits(table, SplitPlan(test_fraction=0.5, val_fraction=0.5, seed=3))
    assert frame["split"].tolist() == table.frame["split"].tolist()


def test_train_and_test_given_carves_val_from_train_by_group():
    groups = [(f"c{g % 2}", "train", 1 + g % 4) for g in range(40)] + [(f"c{g % 2}", "test", 2) for g in range(8)]
    table = make_table(groups)
    frame = assign_splits(table, SplitPlan(val_fraction=0.25, seed=0))
    given_split = table.frame["split"]
    assert (frame.loc[given_split == "test", "split"] == "test").all()
    assert set(frame.loc[given_split == "train", "split"]) == {"train", "val"}
    assert (split_of_group(frame) == 1).all()
    val = frame[frame["split"] == "val"]
    assert set(val["label"]) == set(table.classes)
    pool = (given_split == "train").sum()
    assert len(val) == pytest.approx(0.25 * pool, abs=0.1 * pool)


def test_train_fraction_half_keeps_about_half_of_train_with_all_classes():
    groups = [(f"c{g % 3}", None, 1 + g % 2) for g in range(300)]
    table = make_table(groups)
    full = assign_splits(table, SplitPlan(seed=4))
    half = assign_splits(table, SplitPlan(train_fraction=0.5, seed=4))
    # val and test do not depend on the train fraction
    assert full["split"].where(full["split"].isin(["val", "test"])).equals(
        half["split"].where(half["split"].isin(["val", "test"])))
    n_full, n_half = (full["split"] == "train").sum(), (half["split"] == "train").sum()
    assert n_half == pytest.approx(n_full / 2, rel=0.1)
    assert (half["split"] == UNUSED).sum() == n_full - n_half
    assert set(half.loc[half["split"] == "train", "label"]) == set(table.classes)
    assert (split_of_group(half) == 1).all()
    assert set(half.loc[half["split"] == UNUSED, "sample_id"]) <= set(full.loc[full["split"] == "train", "sample_id"])


def test_group_in_two_predefined_splits_is_rejected():
    table = make_table([("a", "train", 2), ("b", "train", 2), ("a", "test", 1), ("b", "test", 1)])
    frame = table.frame.copy()
    frame.loc[frame["sample_id"] == "g002_s0", "group"] = "g000"  # patient g000 now also in test
    table = SampleTable(frame[["sample_id", "label", "group", "split", "ref"]], table.reader, "t", "x")
    with pytest.raises(UserError) as info:
        assign_splits(table, SplitPlan())
    assert "'g000'" in info.value.line() and "more than one predefined split" in info.value.line()


def test_test_split_with_one_class_is_rejected():
    groups = [("a", "train", 2)] * 4 + [("b", "train", 2)] * 4 + [("a", "val", 1), ("b", "val", 1)]
    groups += [("a", "test", 2)] * 3
    with pytest.raises(UserError) as info:
        assign_splits(make_table(groups), SplitPlan())
    assert "test split holds one class only" in info.value.line()


def test_class_missing_from_predefined_train_is_rejected():
    groups = [("a", "train", 2)] * 3 + [("a", "val", 1), ("b", "val", 1), ("a", "test", 1), ("b", "test", 1)]
    with pytest.raises(UserError, match=r"\['b'\] have no training samples"):
        assign_splits(make_table(groups), SplitPlan())


def test_partial_split_column_is_rejected():
    groups = [("a", "train", 1)] * 5 + [("b", None, 1)] * 5
    with pytest.raises(UserError, match="5 rows have no split"):
        assign_splits(make_table(groups), SplitPlan())


def test_too_little_data_is_a_user_error():
    with pytest.raises(UserError, match="empty"):
        assign_splits(make_table([("a", None, 1), ("b", None, 1)]), SplitPlan())


def test_carve_takes_whole_groups_and_leaves_one_per_class():
    table = make_table([(f"c{g % 2}", None, 3) for g in range(4)])
    picked = carve(table.frame, 0.99, np.random.default_rng(0))
    keys = group_keys(table.frame)
    assert (picked.groupby(keys).nunique() == 1).all()
    kept = table.frame.loc[~picked, "label"]
    assert set(kept) == {"c0", "c1"}
    assert picked.sum() == 6
