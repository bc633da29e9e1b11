"""External test sets: read with the run's source options, whole, classes matched to training's by name."""

from __future__ import annotations

import pandas as pd
import pytest

from medtransfer.config import parse_config
from medtransfer.data.external import load_external
from medtransfer.data.load import load_table
from medtransfer.errors import UserError
from tests.helpers import write_class_folder


def _config(data, **values):
    return parse_config({"data": str(data), "cache_dir": str(data.parent / "cache"), **values})


def test_classes_are_matched_by_name_and_a_missing_one_is_recorded(tmp_path):
    train = write_class_folder(tmp_path / "train", {"benign": 6, "malignant": 6, "normal": 6})
    other = write_class_folder(tmp_path / "other", {"normal": 3, "malignant": 4}, seed=1)
    cfg = _config(train, external={"b": str(other)})
    training = load_table(cfg)
    (ext,) = load_external(cfg, training)
    assert ext.name == "b" and ext.split == "external:b"
    assert ext.table.classes == training.classes == ["benign", "malignant", "normal"]
    assert ext.missing == ["benign"]
    frame = ext.table.frame
    # targets index training's classes, whatever order the external source lists its own in
    assert (frame["target"] == frame["label"].map({"benign": 0, "malignant": 1, "normal": 2})).all()
    assert len(frame) == 7 and set(frame["split"]) == {"test"}


def test_a_class_unknown_to_training_is_refused_naming_the_set(tmp_path):
    train = write_class_folder(tmp_path / "train", {"a": 6, "b": 6})
    other = write_class_folder(tmp_path / "other", {"a": 3, "c": 3}, seed=1)
    cfg = _config(train, external={"site2": str(other)})
    with pytest.raises(UserError, match=r"external set 'site2'.*class\(es\) \['c'\] that training does not have"):
        load_external(cfg, load_table(cfg))


def test_predefined_splits_of_the_external_source_are_ignored(tmp_path):
    train = write_class_folder(tmp_path / "train", {"a": 6, "b": 6})
    other = tmp_path / "other"
    write_class_folder(other / "train", {"a": 3, "b": 3}, seed=2)
    write_class_folder(other / "test", {"a": 2, "b": 2}, seed=3)
    cfg = _config(train, external={"s": str(other)})
    (ext,) = load_external(cfg, load_table(cfg))
    assert len(ext.table) == 10 and set(ext.table.frame["split"]) == {"test"}


def test_a_problem_of_the_external_source_names_the_set(tmp_path):
    train = write_class_folder(tmp_path / "train", {"a": 6, "b": 6})
    cfg = _config(train, external={"gone": str(tmp_path / "missing.npz")})
    with pytest.raises(UserError, match="external set 'gone'"):
        load_external(cfg, load_table(cfg))


@pytest.mark.parametrize("given, message", [
    (["b"], "is not NAME=DATA"), (["=x"], "is not NAME=DATA"), (["a=x", "a=y"], "more than once"),
    (["a b=x"], "must be letters"),
])
def test_bad_external_options_are_refused(tmp_path, given, message):
    with pytest.raises(UserError, match=message):
        parse_config({"data": "synthetic:", "external": given})


def test_external_options_from_a_command_line_and_from_yaml_agree():
    cli = parse_config({"data": "synthetic:", "external": ["b=/x/b.csv", "c=synthetic:seed=3"]})
    yaml = parse_config({"data": "synthetic:", "external": {"b": "/x/b.csv", "c": "synthetic:seed=3"}})
    assert cli.external == yaml.external == {"b": "/x/b.csv", "c": "synthetic:seed=3"}


def test_subgroup_columns_come_from_the_manifest(tmp_path):
    folder = write_class_folder(tmp_path / "img", {"a": 4, "b": 4})
    files = sorted(p.relative_to(folder) for p in folder.rglob("*.png"))
    manifest = pd.DataFrame({"path": [str(p) for p in files], "label": [p.parent.name for p in files],
                             "sex": ["m", "f"] * 4, "age": ["30", "", "70", "55"] * 2})
    manifest.to_csv(folder / "m.csv", index=False)
    table = load_table(_config(folder / "m.csv", subgroups="sex,age:0,50,120"))
    assert table.metadata_columns == ["subgroup:sex", "subgroup:age"]
    assert list(table.frame["subgroup:sex"]) == ["m", "f"] * 4
    assert table.frame["subgroup:age"].isna().sum() == 2  # a blank cell is missing, kept as such
    with pytest.raises(UserError, match="no column --subgroups 'site'"):
        load_table(_config(folder / "m.csv", subgroups="site"))


def test_subgroups_of_a_source_without_metadata_are_refused(tmp_path):
    with pytest.raises(UserError, match="reads metadata columns of a CSV manifest"):
        load_table(parse_config({"data": "synthetic:n=20", "subgroups": "sex"}))


def test_a_volume_sets_subgroups_come_from_its_labels_csv(tmp_path):
    from tests.data.nifti_files import write_patient

    for pid in ("p1", "p2", "p3"):
        write_patient(tmp_path / "vol", pid)
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,label,site\np1,LGG,A\np2,HGG,B\np3,HGG,A\n")
    cfg = _config(tmp_path / "vol", modalities="t1,t2,flair", slices="center:2", labels_csv=str(labels),
                  subgroups="site")
    table = load_table(cfg)
    by_patient = table.frame.groupby("group")["subgroup:site"].agg(set).to_dict()
    assert by_patient == {"p1": {"A"}, "p2": {"B"}, "p3": {"A"}}  # every slice carries its patient's value
    with pytest.raises(UserError, match=r"has no column\(s\) \['scanner'\]"):
        load_table(cfg.model_copy(update={"subgroups": ["scanner"]}))


def _manifest(folder, name, split_column: str | None = None):
    """A CSV manifest of the PNGs under FOLDER (class folders), with a split column of its own when asked."""
    rows = pd.DataFrame([{"path": str(p), "label": p.parent.name} for p in sorted(folder.rglob("*.png"))])
    if split_column:
        rows[split_column] = ["train", "test"] * (len(rows) // 2) + ["train"] * (len(rows) % 2)
    path = folder.parent / f"{name}.csv"
    rows.to_csv(path, index=False)
    return path


def test_an_external_csv_is_read_whole_whatever_split_columns_either_side_has(tmp_path):
    train = _manifest(write_class_folder(tmp_path / "t", {"a": 6, "b": 6}), "train", split_column="fold")
    other = _manifest(write_class_folder(tmp_path / "o", {"a": 3, "b": 4}, seed=1), "other", split_column="split")
    # training's own split column does not apply to the external set, and the external set's does not matter
    cfg = _config(train, split_col="fold", external={"o": str(other)})
    (ext,) = load_external(cfg, load_table(cfg))
    assert len(ext.table) == 7 and set(ext.table.frame["split"]) == {"test"}
    with pytest.raises(UserError, match="has a column 'split'"):  # training itself still refuses an unused one
        load_table(_config(other))


def test_an_external_volume_set_has_its_own_labels_csv(tmp_path):
    from tests.data.nifti_files import write_patient

    for root, pids in (("vol", ("p1", "p2", "p3")), ("ext", ("q1", "q2"))):
        for pid in pids:
            write_patient(tmp_path / root, pid)
    labels, other = tmp_path / "labels.csv", tmp_path / "ext_labels.csv"
    labels.write_text("patient_id,label\np1,LGG\np2,HGG\np3,HGG\n")
    other.write_text("patient_id,label\nq1,HGG\nq2,HGG\n")
    cfg = _config(tmp_path / "vol", modalities="t1,t2,flair", slices="center:2", labels_csv=str(labels),
                  external=[f"b={tmp_path / 'ext'}"], external_labels_csv=[f"b={other}"])
    (ext,) = load_external(cfg, load_table(cfg))
    assert ext.missing == ["LGG"] and set(ext.table.frame["group"]) == {"q1", "q2"}
    assert set(ext.table.frame["label"]) == {"HGG"} and len(ext.table) == 4  # two slices per patient
    without = cfg.model_copy(update={"external_labels_csv": None})  # training's labels CSV is not the set's
    with pytest.raises(UserError, match="pass --external-labels-csv b=CSV"):
        load_external(without, load_table(without))


@pytest.mark.parametrize("values, message", [
    ({"external_labels_csv": ["b=x.csv"], "external": ["b=y"]}, "applies to volume sets"),
    ({"external_labels_csv": ["c=x.csv"], "external": ["b=y"], "modalities": "t1"}, "c.*names no external set"),
])
def test_external_labels_csv_is_for_a_named_volume_set(values, message):
    with pytest.raises(UserError, match=message):
        parse_config({"data": "synthetic:", **values})
