"""Splits: grouped, stratified, seeded; predefined splits respected; impossible splits are UserErrors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medtransfer.data.splits import UNUSED, SplitPlan, assign_splits, carve, group_keys, missing_classes
from medtransfer.data.table import SPLITS, SampleTable
from medtransfer.errors import UserError

from helpers import default_settings

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
def tables(draw, min_groups_per_class: int = 3, max_extra: int = 12):
    """2-4 classes, each of min_groups_per_class to +max_extra groups (often exactly the minimum), 1-5 samples each."""
    n_classes = draw(st.integers(2, 4))
    counts = draw(st.lists(st.integers(min_groups_per_class, min_groups_per_class + max_extra) | st.just(
        min_groups_per_class), min_size=n_classes, max_size=n_classes))
    groups = [(f"c{k}", None, draw(st.integers(1, 5))) for k, n in enumerate(counts) for _ in range(n)]
    groups = draw(st.permutations(groups))
    grouped = draw(st.booleans()) if min_groups_per_class == 3 else True
    if not grouped:  # ungrouped: every sample is its own unit
        groups = [(label, None, 1) for label, _, size in groups for _ in range(size)]
    return make_table(groups, grouped=grouped)


fractions = st.floats(0.01, 0.99)


@settings(max_examples=12, deadline=None, report_multiple_bugs=False)
@given(table=tables(), test=fractions, val=fractions, train=st.sampled_from([1.0, 0.5, 0.05]))
def test_every_class_with_three_groups_is_in_every_split_for_any_seed(table, test, val, train):
    before = table.frame.copy()
    for seed in range(20):
        plan = default_settings(SplitPlan, test_fraction=test, val_fraction=val, train_fraction=train, split_seed=seed)
        # A fraction leaving under one training sample per class is refused (val and test do not depend on it).
        if train < 1.0 and round(train * (assign_splits(table, replace(plan, train_fraction=1.0))["split"]
                                          == "train").sum()) < len(table.classes):
            with pytest.raises(UserError, match="--train-fraction"):
                assign_splits(table, plan)
            continue
        frame = assign_splits(table, plan)
        check_valid(frame, table)
        for split in SPLITS:
            assert set(frame.loc[frame["split"] == split, "label"]) == set(table.classes), (seed, split)
        assert missing_classes(frame, table.classes) == {}
        assert (frame["split"] != UNUSED).all() or train < 1.0
        pd.testing.assert_frame_equal(assign_splits(table, plan), frame)  # same seed, same split
    pd.testing.assert_frame_equal(table.frame, before)  # the table itself is left alone


@st.composite
def tables_with_rare_classes(draw):
    """Two or three classes of >= 3 groups and one or two classes of 1 or 2 groups."""
    counts = draw(st.lists(st.integers(3, 10), min_size=2, max_size=3))
    rare = draw(st.lists(st.integers(1, 2), min_size=1, max_size=2))
    groups = [(f"c{k}", None, draw(st.integers(1, 4))) for k, n in enumerate(counts) for _ in range(n)]
    groups += [(f"rare{k}", None, draw(st.integers(1, 4))) for k, n in enumerate(rare) for _ in range(n)]
    return make_table(draw(st.permutations(groups))), {f"rare{k}": n for k, n in enumerate(rare)}


@settings(max_examples=40, deadline=None, report_multiple_bugs=False)
@given(drawn=tables_with_rare_classes(), seed=st.integers(0, 2**32 - 1), test=fractions, val=fractions)
def test_a_class_with_fewer_than_three_groups_is_refused_or_recorded(drawn, seed, test, val):
    table, rare = drawn
    plan = default_settings(SplitPlan, test_fraction=test, val_fraction=val, split_seed=seed)
    with pytest.raises(UserError) as info:
        assign_splits(table, plan)
    line = info.value.line()
    assert "\n" not in line and "--allow-missing-classes" in line
    for name, n in rare.items():
        assert f"{name!r} ({n} group" in line
    frame = assign_splits(table, default_settings(SplitPlan, test_fraction=test, val_fraction=val, split_seed=seed,
                                                    allow_missing_classes=True))
    assert (split_of_group(frame) == 1).all()
    missing = missing_classes(frame, table.classes)
    assert set(missing) <= {"val", "test"}
    assert {name for names in missing.values() for name in names} == set(rare)
    for name, n in rare.items():  # a 2-group class goes to test before val; a 1-group class stays in train
        assert name in missing["val"]
        assert (name in missing.get("test", [])) == (n == 1)
    common = [c for c in table.classes if c not in rare]
    for split in SPLITS:
        assert set(common) <= set(frame.loc[frame["split"] == split, "label"])
    assert set(frame.loc[frame["split"] == "train", "label"]) == set(table.classes)


@settings(max_examples=15, deadline=None, report_multiple_bugs=False)
@given(data=st.data(), k=st.sampled_from([3, 5]), seed=st.integers(0, 2**32 - 1))
def test_every_class_with_k_groups_is_in_every_held_out_fold(data, k, seed):
    table = data.draw(tables(min_groups_per_class=k, max_extra=6))
    held = []
    for fold in range(k):
        frame = assign_splits(table, default_settings(SplitPlan, split_seed=seed, folds=k, fold=fold))
        check_valid(frame, table)
        for split in SPLITS:  # test is the fold; train the other folds; val carved from them
            assert set(frame.loc[frame["split"] == split, "label"]) == set(table.classes), (fold, split)
        held.append(set(frame.loc[frame["split"] == "test", "sample_id"]))
    assert sum(map(len, held)) == len(table) and set().union(*held) == set(table.frame["sample_id"])
    sizes = sorted(map(len, held))
    assert sizes[-1] - sizes[0] <= 5 * len(table.classes)  # balanced within a group size per class


def test_a_class_of_three_patients_under_five_folds_is_refused_with_one_line():
    table = make_table([("a", None, 2)] * 15 + [("b", None, 1)] * 15 + [("rare", None, 2)] * 3)
    for fold in range(5):  # refused in every fold, also those that happen to hold it: the study cannot be valid
        with pytest.raises(UserError) as info:
            assign_splits(table, default_settings(SplitPlan, folds=5, fold=fold, split_seed=7))
        line = info.value.line()
        assert line == ("t: class(es) too rare to place in every split: 'rare' (3 groups, 6 samples) is not in "
                        "2 of the 5 held-out test folds — use --folds 3 or fewer, or add data of it, "
                        "or pass --allow-missing-classes to go on and record it as a warning")
    lacking = 0
    for fold in range(5):
        plan = default_settings(SplitPlan, folds=5, fold=fold, split_seed=7, allow_missing_classes=True)
        frame = assign_splits(table, plan)
        assert (split_of_group(frame) == 1).all()
        missing = missing_classes(frame, table.classes)
        assert missing in ({}, {"test": ["rare"]})
        lacking += bool(missing)
        assert "rare" in set(frame.loc[frame["split"] == "train", "label"])
    assert lacking == 2  # 3 patients reach 3 of the 5 held-out folds, so 2 have none


def test_a_class_of_two_patients_is_refused_naming_val():
    table = make_table([("a", None, 2)] * 10 + [("b", None, 1)] * 10 + [("rare", None, 1)] * 2)
    for seed in range(50):
        with pytest.raises(UserError, match=r"'rare' \(2 groups, 2 samples\) is not in val — add data of it"):
            assign_splits(table, default_settings(SplitPlan, split_seed=seed))


def test_allowed_missing_classes_still_refuse_a_one_class_eval_split():
    table = make_table([("a", None, 1)] * 10 + [("b", None, 1)])
    with pytest.raises(UserError, match="holds one class only"):
        assign_splits(table, default_settings(SplitPlan, allow_missing_classes=True))


def test_a_class_missing_from_a_predefined_split_is_recorded_not_refused():
    groups = [("a", "train", 1)] * 4 + [("b", "train", 1)] * 4 + [("c", "train", 1)] * 4
    groups += [("a", "val", 1), ("b", "val", 1), ("c", "val", 1), ("a", "test", 1), ("b", "test", 1)]
    table = make_table(groups)
    frame = assign_splits(table, default_settings(SplitPlan))  # the user's own test split: theirs to judge
    assert missing_classes(frame, table.classes) == {"test": ["c"]}


def test_missing_classes_lists_absent_classes_per_split_in_class_order():
    frame = pd.DataFrame({"label": ["a", "b", "c", "a", "b", "a"],
                          "split": ["train", "train", "train", "val", "val", "test"]})
    assert missing_classes(frame, ["c", "b", "a"]) == {"val": ["c"], "test": ["c", "b"]}
    assert missing_classes(frame[frame["split"] == "train"], ["a"]) == {"val": ["a"], "test": ["a"]}


def test_tiny_fractions_still_give_every_class_to_val_and_test():
    table = make_table([(f"c{g % 3}", None, 1 + g % 4) for g in range(90)])
    frame = assign_splits(table, default_settings(SplitPlan, test_fraction=0.001, val_fraction=0.001, split_seed=3))
    for split in ("val", "test"):
        assert frame.loc[frame["split"] == split].groupby("label")["group"].nunique().to_dict() == \
            {"c0": 1, "c1": 1, "c2": 1}


def test_folds_are_the_same_partition_for_every_fold_and_follow_the_seed():
    table = make_table([(f"c{g % 3}", None, 1 + g % 3) for g in range(45)])
    tests = [assign_splits(table, default_settings(SplitPlan, folds=3, fold=f, split_seed=0))["split"] == "test"
             for f in range(3)]
    assert (sum(t.astype(int) for t in tests) == 1).all()  # every row held out exactly once
    other = assign_splits(table, default_settings(SplitPlan, folds=3, fold=0, split_seed=1))["split"] == "test"
    assert not other.equals(tests[0])


def test_fewer_groups_than_folds_is_a_user_error():
    with pytest.raises(UserError, match="cannot make 5 folds from 4 groups"):
        assign_splits(make_table([("a", None, 2)] * 2 + [("b", None, 2)] * 2), default_settings(SplitPlan, folds=5))


@settings(max_examples=30, deadline=None, report_multiple_bugs=False)
@given(table=tables(min_groups_per_class=19, max_extra=8), seed=st.integers(0, 2**32 - 1))
def test_tables_with_enough_groups_always_split(table, seed):
    """With >= 19 groups of <= 5 samples per class, test and val each get a group of every class."""
    frame = assign_splits(table, default_settings(SplitPlan, split_seed=seed))
    check_valid(frame, table)
    for split in SPLITS:
        assert set(frame.loc[frame["split"] == split, "label"]) == set(table.classes)


def test_fractions_are_roughly_kept():
    table = make_table([(f"c{g % 2}", None, 1 + g % 3) for g in range(400)])
    frame = assign_splits(table, default_settings(SplitPlan, test_fraction=0.2, val_fraction=0.25, split_seed=1))
    share = frame["split"].value_counts(normalize=True)
    assert share["test"] == pytest.approx(0.2, abs=0.03)
    assert share["val"] == pytest.approx(0.8 * 0.25, abs=0.03)
    assert share["train"] == pytest.approx(0.8 * 0.75, abs=0.03)


def test_seed_changes_the_split():
    table = make_table([(f"c{g % 3}", None, 2) for g in range(60)])
    a = assign_splits(table, default_settings(SplitPlan, split_seed=0))["split"]
    b = assign_splits(table, default_settings(SplitPlan, split_seed=1))["split"]
    assert not a.equals(b)


def test_predefined_split_is_respected():
    groups = ([("a", "train", 2)] * 5 + [("b", "train", 3)] * 5 + [("a", "val", 1)] * 2 + [("b", "val", 2)] * 2
              + [("a", "test", 2)] * 3 + [("b", "test", 1)] * 3)
    table = make_table(groups)
    frame = assign_splits(table, default_settings(SplitPlan, test_fraction=0.5, val_fraction=0.5, split_seed=3))
    assert frame["split"].tolist() == table.frame["split"].tolist()


def test_train_and_test_given_carves_val_from_train_by_group():
    groups = [(f"c{g % 2}", "train", 1 + g % 4) for g in range(40)] + [(f"c{g % 2}", "test", 2) for g in range(8)]
    table = make_table(groups)
    frame = assign_splits(table, default_settings(SplitPlan, val_fraction=0.25, split_seed=0))
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
    full = assign_splits(table, default_settings(SplitPlan, split_seed=4))
    half = assign_splits(table, default_settings(SplitPlan, train_fraction=0.5, split_seed=4))
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
        assign_splits(table, default_settings(SplitPlan))
    assert "'g000'" in info.value.line() and "more than one predefined split" in info.value.line()


def test_test_split_with_one_class_is_rejected():
    groups = [("a", "train", 2)] * 4 + [("b", "train", 2)] * 4 + [("a", "val", 1), ("b", "val", 1)]
    groups += [("a", "test", 2)] * 3
    with pytest.raises(UserError) as info:
        assign_splits(make_table(groups), default_settings(SplitPlan))
    assert "test split holds one class only" in info.value.line()


def test_class_missing_from_predefined_train_is_rejected():
    groups = [("a", "train", 2)] * 3 + [("a", "val", 1), ("b", "val", 1), ("a", "test", 1), ("b", "test", 1)]
    with pytest.raises(UserError, match=r"\['b'\] have no training samples"):
        assign_splits(make_table(groups), default_settings(SplitPlan))


def test_partial_split_column_is_rejected():
    groups = [("a", "train", 1)] * 5 + [("b", None, 1)] * 5
    with pytest.raises(UserError, match="5 rows have no split"):
        assign_splits(make_table(groups), default_settings(SplitPlan))


def test_too_little_data_is_a_user_error():
    with pytest.raises(UserError, match="empty"):
        assign_splits(make_table([("a", None, 1), ("b", None, 1)]), default_settings(SplitPlan))


def test_carve_takes_whole_groups_and_leaves_one_per_class():
    table = make_table([(f"c{g % 2}", None, 3) for g in range(4)])
    picked = carve(table.frame, 0.99, np.random.default_rng(0))
    keys = group_keys(table.frame)
    assert (picked.groupby(keys).nunique() == 1).all()
    kept = table.frame.loc[~picked, "label"]
    assert set(kept) == {"c0", "c1"}
    assert picked.sum() == 6


def test_a_predefined_split_with_no_train_rows_is_a_user_error():
    with pytest.raises(UserError, match="the train split is empty"):
        assign_splits(make_table([("a", "test", 1)] * 3 + [("b", "test", 1)] * 3), default_settings(SplitPlan))


def test_two_rare_classes_are_named_in_one_line():
    table = make_table([("a", None, 1)] * 9 + [("b", None, 1)] * 9 + [("r1", None, 1)] + [("r2", None, 3)] * 2)
    with pytest.raises(UserError) as info:
        assign_splits(table, default_settings(SplitPlan, split_seed=2))
    assert info.value.line() == (
        "t: class(es) too rare to place in every split: 'r1' (1 group, 1 sample) is not in val, test; "
        "'r2' (2 groups, 6 samples) is not in val — add data of them (train, val and test each need a group of "
        "every class: 3 groups at least), or pass --allow-missing-classes to go on and record them as a warning")


def test_a_train_fraction_leaving_under_one_sample_per_class_is_refused_with_the_count():
    table = make_table([(f"c{g % 2}", None, 1) for g in range(100)], grouped=False)
    n_train = int((assign_splits(table, default_settings(SplitPlan, split_seed=1))["split"] == "train").sum())
    with pytest.raises(UserError) as info:
        assign_splits(table, default_settings(SplitPlan, train_fraction=0.001, split_seed=1))
    line = info.value.line()
    assert f"--train-fraction 0.001 would leave {0.001 * n_train:.2g} of the {n_train} training samples" in line
    assert "fewer than one per class (2 classes)" in line
    lowest = float(line.split("use --train-fraction ")[1].split()[0])
    assert lowest == pytest.approx(2 / n_train, abs=1e-3)
    # The suggested fraction works.
    frame = assign_splits(table, default_settings(SplitPlan, train_fraction=lowest, split_seed=1))
    assert set(frame.loc[frame["split"] == "train", "label"]) == set(table.classes)
