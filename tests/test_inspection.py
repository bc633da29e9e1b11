"""`medtransfer inspect`: counts, groups, image sizes and the problems found, as a dict and as text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medtransfer.data.manifest import ManifestColumns, load_manifest
from medtransfer.data.synthetic import load_synthetic
from medtransfer.data.table import SampleTable
from medtransfer.inspection import inspect_table, render


def _table(labels: list[str], groups: list[str] | None, shape=(5, 6)) -> SampleTable:
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(labels))], "label": labels,
                          "group": groups, "split": None, "ref": range(len(labels))})
    return SampleTable(frame, reader=lambda ref: np.zeros(shape, np.uint8), source="mem", fingerprint="x")


@pytest.fixture(scope="module")
def ham_report(shared_data):
    csv_path = shared_data / "ham10000_subset" / "subset_metadata.csv"
    table = load_manifest(csv_path, ManifestColumns(), None, skip_missing=False)
    return table, pd.read_csv(csv_path, dtype=str), inspect_table(table, sample=30)


def test_real_ham_subset_report(ham_report):
    table, raw, report = ham_report
    assert report["samples"] == len(raw) == 124
    assert report["classes"] == sorted(raw["dx"].unique())
    assert len(report["classes"]) == 7
    assert report["groups"]["groups"] == raw["lesion_id"].nunique() == 123
    assert report["groups"]["samples_per_group_max"] == raw["lesion_id"].value_counts().max()
    counts = report["counts"]
    assert counts[report["classes"]].sum(axis=0).to_dict() == raw["dx"].value_counts().to_dict()
    assert (counts["total"] == counts[report["classes"]].sum(axis=1)).all()
    assert counts["total"].sum() == 124
    assert report["sampled"] == 30 and sum(report["sizes"].values()) == 30
    assert report["channels"] == {3: 30}
    assert set(report["sizes"]) == {"600x450"}  # README: 600x450 RGB JPEGs (WxH)
    rarest = raw["dx"].value_counts().idxmin()
    assert any(repr(rarest) in p and "only" in p for p in report["problems"])
    assert any("imbalance" in p for p in report["problems"])
    assert not any("no group column" in p for p in report["problems"])


def test_render_names_every_class_and_the_groups(ham_report):
    _, raw, report = ham_report
    text = render(report)
    assert text.startswith(report["source"])
    assert "124 samples, 7 classes" in text
    for name in raw["dx"].unique():
        assert name in text
    assert "groups: 123" in text
    assert "600x450" in text
    for problem in report["problems"]:
        assert problem in text


def test_ungrouped_table_warns_about_leakage():
    report = inspect_table(_table(["a"] * 12 + ["b"] * 12, None))
    assert report["groups"] is None
    assert any("no group column" in p for p in report["problems"])
    assert "groups:" not in render(report)


def test_mixed_label_groups_are_reported():
    labels = ["a", "b"] * 10
    groups = ["p1", "p1"] + [f"q{i}" for i in range(18)]
    report = inspect_table(_table(labels, groups))
    assert any(p.startswith("1 group(s) hold more than one label") for p in report["problems"])


def test_clean_table_has_no_problems():
    report = inspect_table(_table(["a", "b"] * 15, [f"p{i}" for i in range(30)]))
    assert report["problems"] == []
    assert "problems: none found" in render(report)


def test_sizes_are_width_by_height_and_sample_is_capped():
    report = inspect_table(_table(["a", "b"] * 6, None, shape=(5, 6)), sample=50)
    assert report["sampled"] == 12
    assert report["sizes"] == {"6x5": 12}
    assert report["channels"] == {1: 12}


def test_counts_per_predefined_split():
    table = load_synthetic("synthetic:n=40,size=8,classes=2,groups=10")
    report = inspect_table(table, sample=5)
    assert report["sampled"] == 5
    row = report["counts"].loc["(none: will be split)"]
    assert row[table.classes].to_dict() == {"class0": 20, "class1": 20}
    assert row["total"] == 40
    assert report["groups"]["groups"] == 10
    assert report["groups"]["samples_per_group_max"] == 4
