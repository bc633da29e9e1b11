"""SampleTable: blank group ids refused up front; with_class_order re-indexes classes and marks the task ordinal;
with_positive_class puts a binary task's chosen class second."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medtransfer.data.table import SampleTable, with_class_order, with_positive_class
from medtransfer.errors import UserError


def _table(labels: list[str], groups: list | None = None, classes: list[str] | None = None) -> SampleTable:
    frame = pd.DataFrame({"sample_id": [f"s{k}" for k in range(len(labels))], "label": labels,
                          "group": groups if groups is not None else None, "split": None,
                          "ref": range(len(labels))})
    return SampleTable(frame, lambda ref: np.zeros((2, 2), np.uint8), "src", "fp", classes or [])


@pytest.mark.parametrize("blank", [None, np.nan, "", "   ", "\t"], ids=["none", "nan", "empty", "spaces", "tab"])
def test_some_blank_group_ids_are_refused_naming_the_rows(blank):
    groups = ["p1", blank, "p2", blank, blank, blank, "p3"]
    with pytest.raises(UserError) as info:
        _table(list("abababa"), groups)
    line = info.value.line()
    assert line == ("src: 4 of 7 samples have a blank group id while the others have one (first: 's1', 's3', 's4') "
                    "— fill in the group column for every row, or drop --group-col")


def test_all_blank_group_ids_mean_no_groups():
    table = _table(list("abab"), ["", " ", None, np.nan])
    assert not table.has_groups
    assert table.frame["group"].isna().all()


def test_filled_group_ids_are_kept():
    table = _table(list("abab"), ["p1", "p1", 7, "p3"])
    assert table.has_groups and table.frame["group"].tolist() == ["p1", "p1", 7, "p3"]


def test_class_order_reindexes_classes_and_targets():
    table = _table(["mild", "none", "severe", "none", "moderate"])
    assert table.classes == ["mild", "moderate", "none", "severe"] and not table.ordinal
    ordered = with_class_order(table, ["none", " mild", "moderate", "severe"])
    assert ordered.ordinal
    assert ordered.classes == ["none", "mild", "moderate", "severe"]
    assert ordered.frame["target"].tolist() == [1, 0, 3, 0, 2]
    assert ordered.frame["label"].tolist() == table.frame["label"].tolist()
    assert table.classes == ["mild", "moderate", "none", "severe"] and not table.ordinal  # the input is left alone
    assert table.frame["target"].tolist() == [0, 2, 3, 2, 1]


@pytest.mark.parametrize("order, expected", [
    (["0", "1", "2", "3"], "names unknown class(es) ['3'] and lacks class(es) ['10']"),
    (["0", "1"], "lacks class(es) ['2', '10']"),
    (["0", "1", "1", "2", "10"], "names ['1'] twice"),
])
def test_bad_class_order_names_the_unknown_or_missing_classes(order, expected):
    table = _table(["0", "1", "2", "10"], classes=["0", "1", "2", "10"])
    with pytest.raises(UserError) as info:
        with_class_order(table, order)
    line = info.value.line()
    assert expected in line and "the classes are ['0', '1', '2', '10']" in line and "--class-order" in line


def test_positive_class_goes_second_with_targets_remapped():
    table = _table(["benign", "malignant", "malignant", "benign", "malignant"])
    assert table.classes == ["benign", "malignant"]
    flipped = with_positive_class(table, " benign")
    assert flipped.classes == ["malignant", "benign"] and not flipped.ordinal
    assert flipped.frame["target"].tolist() == [1, 0, 0, 1, 0]
    assert flipped.frame["label"].tolist() == table.frame["label"].tolist()
    assert table.frame["target"].tolist() == [0, 1, 1, 0, 1]  # the input is left alone
    same = with_positive_class(table, "malignant")
    assert same.classes == table.classes and same.frame["target"].tolist() == table.frame["target"].tolist()


@pytest.mark.parametrize("labels, name, expected", [
    (["a", "b", "c"], "a", "applies to binary tasks; src has 3 classes ['a', 'b', 'c']"),
    (["normal", "pneumonia"], "sick", "is not a class of src; the classes are ['normal', 'pneumonia']"),
])
def test_bad_positive_class_is_refused_naming_the_classes(labels, name, expected):
    with pytest.raises(UserError) as info:
        with_positive_class(_table(labels), name)
    line = info.value.line()
    assert line.startswith(f"positive class {name!r}: ") and expected in line and "--positive-class" in line
    assert "\n" not in line and "label number" not in line


def test_a_label_number_for_a_named_class_says_to_use_the_name():
    with pytest.raises(UserError, match="by name, not by label number"):
        with_positive_class(_table(["normal", "pneumonia"]), "0")


def test_positive_class_must_agree_with_an_ordinal_order():
    ordered = with_class_order(_table(["low", "high", "low"]), ["low", "high"])
    assert with_positive_class(ordered, "high").classes == ["low", "high"]
    with pytest.raises(UserError) as info:
        with_positive_class(ordered, "low")
    line = info.value.line()
    assert "conflicts with the ordinal class order ['low', 'high']" in line and "'low' highest" in line
