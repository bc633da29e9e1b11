"""MedMNIST class names: recognised by the file stem, from the medmnist package when installed, else the copied
table; only names change, never the integer label order."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtransfer.data import medmnist_info
from medtransfer.data.medmnist_info import LABELS, class_names, dataset_of, name_classes, official_labels
from medtransfer.data.npz import load_npz
from medtransfer.data.table import with_class_order
from medtransfer.errors import UserError


@pytest.fixture(autouse=True)
def _fresh_labels():
    """official_labels is cached per process; each test sees the package (or its absence) it sets up."""
    official_labels.cache_clear()
    yield
    official_labels.cache_clear()


@pytest.fixture
def no_package(monkeypatch):
    """The medmnist package absent, whether or not this environment has it: the copied table answers."""
    monkeypatch.setitem(sys.modules, "medmnist", None)
    monkeypatch.setitem(sys.modules, "medmnist.info", None)


def _npz(path: Path, labels: list[int]) -> Path:
    """A tiny 2D file whose every split holds LABELS."""
    n = len(labels)
    arrays = {f"{s}_images": np.zeros((n, 4, 4), np.uint8) for s in ("train", "val", "test")}
    arrays |= {f"{s}_labels": np.array(labels, np.uint8).reshape(n, 1) for s in ("train", "val", "test")}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("name, dataset", [("pneumoniamnist.npz", "pneumoniamnist"),
                                           ("pneumoniamnist_64.npz", "pneumoniamnist"),
                                           ("BreastMNIST_224.npz", "breastmnist"), ("organmnist3d_64.npz", "organmnist3d"),
                                           ("pneumonia.npz", None), ("pneumoniamnist_65.npz", None),
                                           ("mypneumoniamnist.npz", None), ("chestmnist.npz", None)])
def test_datasets_are_recognised_by_the_zenodo_file_stem(no_package, name, dataset):
    assert dataset_of(Path("/data") / name) == dataset


def test_a_medmnist_file_gets_the_official_names_in_label_order(no_package, tmp_path):
    table = load_npz(_npz(tmp_path / "pneumoniamnist_64.npz", [1, 0, 1, 1]))
    assert table.classes == ["normal", "pneumonia"]
    assert table.frame["label"].tolist()[:4] == ["pneumonia", "normal", "pneumonia", "pneumonia"]
    assert table.frame["target"].tolist()[:4] == [1, 0, 1, 1]  # targets are still the file's integer labels
    assert any("MedMNIST v2" in note and "medmnist 3.0.2" in note and "0 'normal', 1 'pneumonia'" in note
               for note in table.notes)


def test_names_follow_the_labels_present_not_their_count(no_package, tmp_path):
    table = load_npz(_npz(tmp_path / "octmnist.npz", [3, 0, 3]))  # a subset holding labels 0 and 3 only
    assert table.classes == ["choroidal neovascularization", "normal"]
    assert table.frame["target"].tolist()[:3] == [1, 0, 1]


def test_labels_outside_the_dataset_keep_integer_names_with_a_note(no_package, tmp_path):
    table = load_npz(_npz(tmp_path / "pneumoniamnist.npz", [0, 1, 2]))
    assert table.classes == ["0", "1", "2"]
    assert any("[2] are not among pneumoniamnist's 2 classes" in note for note in table.notes)


def test_other_files_and_retinamnist_grades_keep_integer_names_without_a_note(no_package, tmp_path):
    assert load_npz(_npz(tmp_path / "tiny.npz", [0, 1])).classes == ["0", "1"]
    retina = load_npz(_npz(tmp_path / "retinamnist_128.npz", [0, 1, 2, 3, 4]))
    assert retina.classes == ["0", "1", "2", "3", "4"] and retina.ordinal
    assert not any("class names" in note for note in retina.notes)


def test_the_installed_package_is_preferred_and_named(monkeypatch, tmp_path):
    """A stand-in medmnist.info with other names proves which source answered; multi-label sets are skipped."""
    info = types.ModuleType("medmnist.info")
    info.__version__ = "9.9.9"
    info.INFO = {"pneumoniamnist": {"task": "binary-class", "label": {"1": "sick", "0": "well"}},
                 "chestmnist": {"task": "multi-label, binary-class", "label": {"0": "atelectasis"}}}
    monkeypatch.setitem(sys.modules, "medmnist", types.ModuleType("medmnist"))
    monkeypatch.setitem(sys.modules, "medmnist.info", info)
    assert official_labels()[0] == {"pneumoniamnist": ("well", "sick")}
    named = class_names(tmp_path / "pneumoniamnist.npz", [0, 1])
    assert named is not None and named.names == {0: "well", 1: "sick"} and "installed medmnist 9.9.9" in named.note
    assert dataset_of(tmp_path / "breastmnist.npz") is None  # the package's INFO lacks it here


def test_the_copied_table_matches_the_installed_package_when_there_is_one():
    pytest.importorskip("medmnist")
    labels, source = official_labels()
    assert "installed medmnist" in source
    assert {name: labels[name] for name in LABELS} == LABELS
    assert medmnist_info.COPIED_FROM.startswith("medmnist ")


def test_class_order_by_label_number_on_named_classes_says_to_use_the_names(no_package, tmp_path):
    table = load_npz(_npz(tmp_path / "pneumoniamnist.npz", [0, 1]))
    with pytest.raises(UserError) as info:
        with_class_order(table, ["0", "1"])
    line = info.value.line()
    assert "['normal', 'pneumonia']" in line and "by name, not by label number" in line
    assert with_class_order(table, ["pneumonia", "normal"]).classes == ["pneumonia", "normal"]


def test_a_3d_set_is_named_by_its_own_numbering_not_the_2d_organs(no_package):
    frame = pd.DataFrame({"label": ["5", "0", "5"]})
    classes, notes = name_classes(Path("organmnist3d_64.npz"), frame)
    assert classes == ["liver", "bladder"] and frame["label"].tolist() == ["bladder", "liver", "bladder"]
    two_d = name_classes(Path("organamnist.npz"), pd.DataFrame({"label": ["5", "0"]}))[0]
    assert two_d == ["bladder", "kidney-right"]
    assert len(notes) == 1
