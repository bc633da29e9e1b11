"""The `subgroups` option: columns and bins from a string or a list, and clear refusals."""

from __future__ import annotations

import pytest

from medtransfer.data.subgroup_spec import SubgroupColumn, parse_subgroups


def test_parse_a_string_and_a_list() -> None:
    want = [SubgroupColumn("sex"), SubgroupColumn("age", (0.0, 50.0, 120.0)), SubgroupColumn("site")]
    assert parse_subgroups("sex, age:0,50,120,site") == want
    assert parse_subgroups(["sex", "age:0, 50,120", "site"]) == want
    assert [c.text for c in want] == ["sex", "age:0,50,120", "site"]
    assert parse_subgroups("bmi:-inf,18.5,25,inf")[0].text == "bmi:-inf,18.5,25,inf"
    assert parse_subgroups(None) is None and parse_subgroups([]) is None


@pytest.mark.parametrize("value, message", [
    ("", "empty column name"),
    ("sex,,age", "empty column name"),
    ("sex,", "empty column name"),
    (":0,50", "empty column name"),
    ("age:", "age: no bin edges after ':'"),
    ("age:young,old", "age: bin edges must be numbers, got \\['young'\\]"),
    ("age:50", "age: need at least 2 bin edges"),
    ("age:0,x", "age: need at least 2 bin edges before the next column, got '0' then 'x'"),
    ("age:50,10", "age: bin edges must ascend strictly"),
    ("age:0,50,50", "age: bin edges must ascend strictly"),
    ("sex,age:0,50,sex", "column\\(s\\) \\['sex'\\] named more than once"),
    (["age:0,50", "age"], "column\\(s\\) \\['age'\\] named more than once"),
    (["sex", 3], "need a string or a list of strings"),
    (5, "need a string or a list of strings"),
])
def test_parse_refuses_bad_input_with_a_clear_message(value, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_subgroups(value)
