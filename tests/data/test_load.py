"""From run settings to a SampleTable: volume options reach the volume reader, --split-dirs the folder reader;
separate mode is per run; Kaggle split folders train through the installed CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import run_cli, volume_settings, write_class_folder

from medtransfer.config import parse_config
from medtransfer.data.load import load_table, resolve_positive_class, volume_options
from medtransfer.errors import UserError


def test_volume_options_follow_the_config():
    cfg = parse_config({"data": "/v", "modalities": ["t1", "t2", "flair"], "slices": "tumor:3", "plane": "coronal",
                        "normalize": "zscore", "labels_csv": "/l.csv", "skip_incomplete": True, "pattern": "{modality}.nii"})
    opts = volume_options(cfg)
    assert (opts.modalities, opts.slices, opts.plane, opts.normalize, opts.labels_csv, opts.skip_incomplete,
            opts.pattern) == (("t1", "t2", "flair"), "tumor:3", "coronal", "zscore", "/l.csv", True, "{modality}.nii")


def test_separate_mode_with_several_modalities_is_a_study_not_a_run(tmp_path):
    cfg = parse_config({"data": str(tmp_path), "modalities": ["t1", "t2"], "modality_mode": "separate"})
    with pytest.raises(UserError, match="one run per modality"):
        load_table(cfg)


def test_image_sources_ignore_volume_settings():
    table = load_table(parse_config({"data": "synthetic:n=20,size=16"}))
    assert len(table) == 20


def test_volume_options_are_declared_once_in_the_config():
    """The data-layer options are the config's fields by name, with no defaults of their own to drift apart."""
    from dataclasses import MISSING, fields

    from medtransfer.config import TrainConfig
    from medtransfer.data.volume_options import VolumeOptions

    options = fields(VolumeOptions)
    assert len(options) == 8 and all(f.name in TrainConfig.model_fields for f in options)
    assert all(f.default is MISSING and f.default_factory is MISSING for f in options)
    assert volume_settings() == volume_options(parse_config({"data": "/v"}))



# ---- --positive-class: the chosen class second, recorded; refused where it cannot apply -------------------------

def test_positive_class_reorders_the_loaded_table_and_is_resolved_for_the_record():
    natural = load_table(parse_config({"data": "synthetic:n=20,size=16"}))
    cfg = parse_config({"data": "synthetic:n=20,size=16", "positive_class": "class0"})
    flipped = load_table(cfg)
    assert natural.classes == ["class0", "class1"] and flipped.classes == ["class1", "class0"]
    assert (flipped.frame["target"] == 1 - natural.frame["target"]).all()
    assert resolve_positive_class(cfg, flipped) == "class0"
    assert resolve_positive_class(parse_config({"data": "synthetic:n=20,size=16"}), natural) == "class1"
    three = parse_config({"data": "synthetic:n=30,size=16,classes=3"})
    assert resolve_positive_class(three, load_table(three)) is None
    with pytest.raises(ValueError, match="not the configured"):  # a table loaded from other settings
        resolve_positive_class(cfg, natural)


@pytest.mark.parametrize("settings, expected", [
    ({"positive_class": "class7"}, "is not a class of synthetic"),
    ({"data": "synthetic:n=30,size=16,classes=3", "positive_class": "class0"}, "applies to binary tasks"),
    ({"class_order": "class0,class1", "positive_class": "class0"}, "conflicts with the ordinal class order"),
])
def test_positive_class_is_refused_where_it_cannot_apply(settings, expected):
    with pytest.raises(UserError, match=expected) as info:
        load_table(parse_config({"data": "synthetic:n=20,size=16"} | settings))
    assert "class0" in info.value.line() and "\n" not in info.value.line()


def test_positive_class_agrees_with_a_class_order_that_puts_it_last():
    cfg = parse_config({"data": "synthetic:n=20,size=16", "class_order": "class1,class0", "positive_class": "class0"})
    table = load_table(cfg)
    assert table.classes == ["class1", "class0"] and table.ordinal

def test_breastmnist_counts_malignant_as_positive_unless_told_otherwise(tmp_path):
    """BreastMNIST lists its finding first (0 malignant, 1 normal, benign): unlike the second-class default, the
    finding is the positive class of sensitivity and ROC; --positive-class still decides."""
    path = tmp_path / "breastmnist.npz"
    labels = {f"{s}_labels": (np.arange(6) % 2).astype(np.uint8).reshape(6, 1) for s in ("train", "val", "test")}
    np.savez(path, **{f"{s}_images": np.zeros((6, 8, 8), np.uint8) for s in ("train", "val", "test")}, **labels)
    cfg = parse_config({"data": str(path)})
    table = load_table(cfg)
    assert table.classes == ["normal, benign", "malignant"] and resolve_positive_class(cfg, table) == "malignant"
    assert (table.frame["target"] == (table.frame["label"] == "malignant")).all()  # targets remapped with it
    assert any("positive class 'malignant'" in note for note in table.notes)
    benign = parse_config({"data": str(path), "positive_class": "normal, benign"})
    assert load_table(benign).classes == ["malignant", "normal, benign"]
    pneumonia = tmp_path / "pneumoniamnist.npz"
    path.rename(pneumonia)  # lists its finding second already: left in label order
    assert load_table(parse_config({"data": str(pneumonia)})).classes == ["normal", "pneumonia"]


# ---- image folders: --split-dirs reaches the folder reader; split folders are never classes -------------------

BRAIN = ("glioma", "meningioma", "notumor", "pituitary")
CLI = Path(sys.executable).with_name("medtransfer")  # the installed console script
TINY = ["--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--epochs", "2", "--bootstrap", "100",
        "--workers", "0", "--device", "cpu", "-q"]


def _two_splits(root: Path, train: str, test: str) -> Path:
    """ROOT/<train>/<class>/*.png (8 per class) and ROOT/<test>/<class>/*.png (3 per class), 4 classes."""
    write_class_folder(root, dict.fromkeys(BRAIN, 8), size=28, splits=(train,))
    write_class_folder(root, dict.fromkeys(BRAIN, 3), size=28, seed=1, splits=(test,))
    return root


def test_split_dirs_reach_the_folder_reader(tmp_path):
    root = _two_splits(tmp_path / "brain", "A_part", "B_part")
    table = load_table(parse_config({"data": str(root), "split_dirs": "train=A_part,test=B_part"}))
    assert table.frame["split"].value_counts().to_dict() == {"train": 32, "test": 12}
    assert table.classes == list(BRAIN) and "given by --split-dirs" in table.layout
    with pytest.raises(UserError, match="--split-dirs train=NAME,test=NAME"):
        load_table(parse_config({"data": str(root)}))


def test_split_dirs_on_a_source_that_is_not_a_folder_are_refused(tmp_path):
    npz = tmp_path / "tiny.npz"
    np.savez(npz, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.array([[0], [1], [0], [1]]))
    with pytest.raises(UserError, match="applies to image folders only"):
        load_table(parse_config({"data": str(npz), "split_dirs": "train=a,test=b"}))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=600)


def _check_run(out: Path, train: str, test: str) -> dict:
    """4 classes; test is the test folder; val was carved from the train folder (no val folder exists)."""
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == list(BRAIN)
    assert metrics["n_test"] == 12 and metrics["n_train"] + metrics["n_val"] == 32 and metrics["n_val"] > 0
    predictions = pd.read_csv(out / "predictions.csv")
    folder = predictions["sample_id"].str.split("/").str[0]
    assert set(folder[predictions["split"] == "test"]) == {test}
    assert set(folder[predictions["split"].isin(["train", "val"])]) == {train}
    assert set(predictions.loc[predictions["split"] == "val", "label"]) == set(BRAIN)
    return yaml.safe_load((out / "config.yaml").read_text())


@pytest.mark.slow  # two starts of the console script, one with torch: ~20 s on two cores
def test_kaggle_training_testing_layout_trains_with_4_classes_and_val_carved_from_train(tmp_path):
    root = _two_splits(tmp_path / "brain-mri", "Training", "Testing")
    shown = _cli("inspect", str(root))
    assert shown.returncode == 0, shown.stderr
    assert "4 classes" in shown.stdout
    layout = "layout: split folders Training→train, Testing→test (recognised by name); 4 class folders"
    assert layout in shown.stdout
    assert "Training" not in shown.stdout.split("layout:")[0]  # the split folders are not listed as classes

    out = tmp_path / "run"
    done = _cli("train", str(root), *TINY, "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    config = _check_run(out, "Training", "Testing")
    assert config["split_dirs"] is None


def test_unrecognised_split_names_exit_2_with_the_hint_and_train_once_mapped(tmp_path, monkeypatch, capsys):
    root = _two_splits(tmp_path / "parts", "A_part", "B_part")
    refused = _cli("inspect", str(root))  # the console script, without the seconds a torch import costs
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert "--split-dirs train=NAME,test=NAME" in lines[0] and "A_part, B_part" in lines[0]
    out = tmp_path / "run"
    code, _, stderr = run_cli(["train", str(root), *TINY, "--out", str(out)], monkeypatch, capsys)
    assert code == 2 and stderr.strip() == lines[0] and not out.exists()

    # In-process (the console script's own main()): a second process start would double this test's time.
    code, _, stderr = run_cli(["train", str(root), *TINY, "--split-dirs", "train=A_part,test=B_part", "--out",
                               str(out), "--cache-dir", str(tmp_path / "cache")], monkeypatch, capsys)
    assert code == 0, stderr
    config = _check_run(out, "A_part", "B_part")
    assert config["split_dirs"] == {"train": "A_part", "test": "B_part"}
