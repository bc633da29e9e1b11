"""Volume set layouts: patient folders, labels from a CSV or class folders, missing and ambiguous files."""

from __future__ import annotations


import pytest
from data.nifti_files import SYNTH, write_patient
from helpers import volume_settings

from medtransfer.data.volumes import load_volumes
from medtransfer.errors import UserError


def test_labels_from_csv_or_class_folders(tmp_path):
    flat, nested = tmp_path / "flat", tmp_path / "nested"
    for pid in ("p1", "p2"):
        write_patient(flat, pid)
    (tmp_path / "labels.csv").write_text("patient_id,label\np1,glioma\np2,lymphoma\n")
    table = load_volumes(flat, volume_settings(modalities=("t1",), labels_csv=str(tmp_path / "labels.csv"),
                                             slices="center:2", normalize="zscore"))
    assert dict(zip(table.frame["group"], table.frame["label"])) == {"p1": "glioma", "p2": "lymphoma"}
    assert table.pixels(0).shape == (12, 12)

    write_patient(nested / "glioma", "a")
    write_patient(nested / "lymphoma", "b")
    table = load_volumes(nested, SYNTH)
    assert table.classes == ["glioma", "lymphoma"] and len(table) == 8


def test_missing_modality_names_the_patient_unless_skipped(tmp_path):
    write_patient(tmp_path, "p1")
    write_patient(tmp_path, "p2", modalities=("t1", "t2"))
    with pytest.raises(UserError, match=r"patient 'p2'.*'flair'.*\{case\}_\{modality\}\.nii\.gz.*--skip-incomplete"):
        load_volumes(tmp_path, SYNTH)

    table = load_volumes(tmp_path, volume_settings(modalities=SYNTH.modalities, slices="center:4", skip_incomplete=True))
    assert set(table.frame["group"]) == {"p1"} and any("skipped 1 of 2" in n for n in table.notes)


def test_unknown_modality_lists_those_seen(tmp_path):
    write_patient(tmp_path, "p1")
    with pytest.raises(UserError, match=r"modality 'dwi'.*seen: \['flair', 't1', 't2'\]"):
        load_volumes(tmp_path, volume_settings(modalities=("dwi",), slices="center:2"))


def test_labels_csv_that_does_not_match_the_folders(tmp_path):
    for pid in ("p1", "p2"):
        write_patient(tmp_path / "set", pid)
    csv = tmp_path / "labels.csv"
    csv.write_text("patient_id,label\np1,a\np3,b\n")
    with pytest.raises(UserError, match=r"labels\.csv.*\['p3'\].*\['p2'\].*patient_id"):
        load_volumes(tmp_path / "set", volume_settings(modalities=("t1",), labels_csv=str(csv)))


def test_tumor_slices_need_a_seg_file(tmp_path):
    write_patient(tmp_path, "p1")
    with pytest.raises(UserError, match=r"modality 'seg'.*tumor:K"):
        load_volumes(tmp_path, volume_settings(modalities=("t1",), slices="tumor:2"))


def test_patient_ids_equal_but_for_case_are_refused(tmp_path):
    write_patient(tmp_path, "P01")
    write_patient(tmp_path, "p01")
    with pytest.raises(UserError, match=r"'P01' and 'p01' differ only in case"):
        load_volumes(tmp_path, SYNTH)
