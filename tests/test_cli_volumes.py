"""Bad volume and DICOM input through the CLI: one stderr line, exit 2, no run directory."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from data.test_npz_volumes import write_volumes
from helpers import run_cli
from test_cli import assert_bad_input

FAST = ["--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--epochs", "1", "--bootstrap", "100",
        "-q", "--modalities", "t1,t2,flair", "--slices", "center:2"]


def write_set(root: Path, patients: int = 6, shape: tuple[int, ...] = (16, 16, 8)) -> Path:
    rng = np.random.default_rng(0)
    rows = ["patient_id,label"]
    for i in range(patients):
        pid = f"P{i}"
        (root / pid).mkdir(parents=True)
        for modality in ("t1", "t2", "flair"):
            nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32), np.eye(4)), root / pid / f"{pid}_{modality}.nii.gz")
        rows.append(f"{pid},{'low' if i % 2 else 'high'}")
    (root.parent / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def volumes(tmp_path) -> Path:
    return write_set(tmp_path / "vols")


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "runs" / "r"


def args(volumes: Path) -> list[str]:
    return ["train", str(volumes), *FAST, "--labels-csv", str(volumes.parent / "labels.csv")]


def test_missing_modality(volumes, out, monkeypatch, capsys):
    (volumes / "P3" / "P3_flair.nii.gz").unlink()
    line = assert_bad_input(args(volumes), out, monkeypatch, capsys, "P3")
    assert "--skip-incomplete" in line


def test_patients_in_csv_without_folders(volumes, out, monkeypatch, capsys):
    with open(volumes.parent / "labels.csv", "a") as handle:
        handle.write("P99,low\n")
    assert_bad_input(args(volumes), out, monkeypatch, capsys, "P99")


def test_2d_file_where_a_volume_is_expected(volumes, out, monkeypatch, capsys):
    nib.save(nib.Nifti1Image(np.ones((16, 16), np.float32), np.eye(4)), volumes / "P2" / "P2_t2.nii.gz")
    assert_bad_input(args(volumes), out, monkeypatch, capsys, "P2_t2.nii.gz")


def test_non_invertible_affine(volumes, out, monkeypatch, capsys):
    img = nib.Nifti1Image(np.ones((16, 16, 8), np.float32), np.eye(4))
    img.header.set_qform(None, code=0)
    img.header.set_sform(np.zeros((4, 4)), code=1)  # nibabel refuses to save a zero affine any other way
    nib.save(nib.Nifti1Image(img.dataobj, None, header=img.header), volumes / "P1" / "P1_t1.nii.gz")
    assert_bad_input(args(volumes), out, monkeypatch, capsys, "P1_t1.nii.gz")


def test_truncated_nifti(volumes, out, monkeypatch, capsys):
    path = volumes / "P4" / "P4_flair.nii.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) // 2]))
    assert_bad_input(args(volumes), out, monkeypatch, capsys, "P4_flair.nii.gz")


def test_unknown_modality(volumes, out, monkeypatch, capsys):
    bad = [a if a != "t1,t2,flair" else "t1,t2,dwi" for a in args(volumes)]
    assert_bad_input(bad, out, monkeypatch, capsys, "dwi")


def write_dicom(path: Path, pixels: np.ndarray, syntax: str = "1.2.840.10008.1.2.1", with_pixels: bool = True) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)


def dicom_folder(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for label in ("normal", "pneumonia"):
        (root / label).mkdir(parents=True)
        for i in range(8):
            write_dicom(root / label / f"img{i}.dcm", rng.integers(0, 4095, (24, 24)))
    return root


def test_dicom_radiographs_train_from_class_folders(tmp_path, monkeypatch, capsys):


    root = dicom_folder(tmp_path / "xr")
    code, _, err = run_cli(["train", str(root), "--backbone", "resnet18", "--weights", "none", "--image-size", "32",
                            "--epochs", "1", "--bootstrap", "100", "-q", "--out", str(tmp_path / "run"),
                            "--cache-dir", str(tmp_path / "c"), "--workers", "0"], monkeypatch, capsys)
    assert code == 0, err


def test_unknown_transfer_syntax(tmp_path, out, monkeypatch, capsys):
    root = dicom_folder(tmp_path / "xr")
    write_dicom(root / "normal" / "img3.dcm", np.zeros((24, 24)), syntax="1.2.3.4.5.6.7")
    assert_bad_input(["train", str(root), "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "-q",
                      "--workers", "0"], out, monkeypatch, capsys, "img3.dcm")


def test_dicom_without_pixel_data(tmp_path, out, monkeypatch, capsys):
    root = dicom_folder(tmp_path / "xr")
    write_dicom(root / "pneumonia" / "img5.dcm", np.zeros((24, 24)), with_pixels=False)
    assert_bad_input(["train", str(root), "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "-q",
                      "--workers", "0"], out, monkeypatch, capsys, "img5.dcm")


def test_inspect_volumes_writes_a_contact_sheet(volumes, tmp_path, monkeypatch, capsys):


    sheet = tmp_path / "sheet.png"
    code, stdout, err = run_cli(["inspect", str(volumes), "--modalities", "t1,t2,flair", "--labels-csv",
                                 str(volumes.parent / "labels.csv"), "--contact-sheet", str(sheet)], monkeypatch, capsys)
    assert code == 0, err
    assert "6 patients" in stdout and sheet.read_bytes()[:4] == b"\x89PNG"




def write_series(folder: Path, description: str, slices: int = 4, with_pixels: bool = True) -> None:
    """One DICOM series (axial slices 5 mm apart) described by `description`."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    uid = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(description)) % 2**32)
    for k in range(slices):
        path = folder / f"{description.replace(' ', '_')}_{k}.dcm"
        write_dicom(path, rng.integers(0, 4095, (16, 16)), with_pixels=with_pixels)
        ds = dcmread(path)
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.PatientID = uid, description, folder.name
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 5.0 * k]
        ds.PixelSpacing = [1.0, 1.0]
        ds.InstanceNumber = k + 1
        ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)


def dicom_patients(root: Path, n: int = 10) -> list[str]:
    for i in range(n):
        for description in ("AX FLAIR", "AX T2", "AX T1 POST GD"):
            write_series(root / f"P{i}" / description.replace(" ", "_"), description)
    labels = [f"P{i},{'low' if i % 2 else 'high'}" for i in range(n)]
    (root.parent / "labels.csv").write_text("patient_id,label\n" + "\n".join(labels) + "\n")
    return ["train", str(root), "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "-q",
            "--modalities", "flair,t2,t1post", "--slices", "center:2", "--labels-csv", str(root.parent / "labels.csv"),
            "--epochs", "1", "--bootstrap", "100", "--workers", "0", "--val-fraction", "0.3"]


def test_dicom_studies_train_as_volumes(tmp_path, monkeypatch, capsys):
    argv = dicom_patients(tmp_path / "dcm")
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c")],
                           monkeypatch, capsys)
    assert code == 0, err
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["bootstrap"]["unit"] == "group" and "patient" in metrics


def test_ambiguous_series_match(tmp_path, out, monkeypatch, capsys):
    argv = dicom_patients(tmp_path / "dcm")
    write_series(tmp_path / "dcm" / "P2" / "COR_FLAIR", "COR FLAIR")
    line = assert_bad_input([*argv, "--cache-dir", str(tmp_path / "c")], out, monkeypatch, capsys, "FLAIR")
    assert "COR FLAIR" in line and "AX FLAIR" in line


def test_empty_series(tmp_path, out, monkeypatch, capsys):
    argv = dicom_patients(tmp_path / "dcm")
    t2 = tmp_path / "dcm" / "P1" / "AX_T2"
    shutil.rmtree(t2)
    write_series(t2, "AX T2", with_pixels=False)
    assert_bad_input([*argv, "--cache-dir", str(tmp_path / "c")], out, monkeypatch, capsys, "T2")


# ---- volumes whose voxels are bad: refused in one line, never a channel of zeros ------------------------------


def test_nan_voxels_stop_the_run_naming_the_file(volumes, out, monkeypatch, capsys):
    data = np.random.default_rng(3).random((16, 16, 8)).astype(np.float32)
    data[2:4, 2:4, :] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), volumes / "P5" / "P5_t2.nii.gz")
    line = assert_bad_input([*args(volumes), "--workers", "0", "--cache-dir", str(out.parent / "c")], out,
                            monkeypatch, capsys, "P5_t2.nii.gz")
    assert "32 NaN" in line


def test_modality_outside_the_reference_in_world_space(volumes, out, monkeypatch, capsys):
    far = np.eye(4)
    far[0, 3] = 400.0
    nib.save(nib.Nifti1Image(np.ones((16, 16, 8), np.float32), far), volumes / "P0" / "P0_flair.nii.gz")
    line = assert_bad_input(args(volumes), out, monkeypatch, capsys, "P0_flair.nii.gz")
    assert "do not overlap" in line


# ---- 3D MedMNIST files -----------------------------------------------------------------------------------------

CONSOLE = Path(sys.executable).with_name("medtransfer")  # the installed console script


@pytest.fixture
def organ3d(tmp_path) -> Path:
    path = tmp_path / "organmnist3d.npz"
    write_volumes(path)  # 20/6/6 volumes of 28³, the two classes visibly different
    return path


@pytest.mark.slow  # two training runs in subprocesses: about 15 s each on an idle 2-core machine
@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_3d_medmnist_trains_by_patient_through_the_installed_cli(organ3d, tmp_path, mode):
    run = tmp_path / f"run-{mode}"
    done = subprocess.run([str(CONSOLE), "train", str(organ3d), "--backbone", "resnet18", "--weights", "none",
                           "--image-size", "32", "--epochs", "1", "--bootstrap", "100", "-q", "--slices", "center:2",
                           "--mode", mode, "--batch-size", "16", "--workers", "0", "--out", str(run),
                           "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["bootstrap"]["unit"] == "group"
    assert metrics["patient"]["n_test"] == 6 and "auroc" in metrics["patient"]["test"]
    assert metrics["n_train"] == 2 * 20  # the file's own splits, two slices per volume
    predictions = pd.read_csv(run / "predictions.csv")
    assert set(predictions["split"]) == {"val", "test"}
    per_group = predictions.groupby("group")["split"].agg(["nunique", "first"])
    assert per_group["nunique"].eq(1).all()  # no volume has slices in two splits
    assert (per_group.index.str.split("_").str[0] == per_group["first"]).all()  # and it is the file's split
    assert len(per_group) == 12


def test_inspect_3d_medmnist_shows_volumes_and_writes_a_contact_sheet(organ3d, tmp_path):
    sheet = tmp_path / "sheet.png"
    done = subprocess.run([str(CONSOLE), "inspect", str(organ3d), "--slices", "center:3", "--plane", "coronal",
                           "--contact-sheet", str(sheet)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "volumes of 28x28x28" in done.stdout and "train: 20 volumes (labels liver ×10, kidney-right ×10)" in done.stdout
    assert "test: 6 volumes" in done.stdout and "slices: 96 (per volume 3–3)" in done.stdout
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("change", "extra", "mention"), [
    (lambda a: a["val_images"].__setitem__(2, 0), [], "val_000002"),
    (lambda a: a.__setitem__("train_images", a["train_images"].astype(np.int16)), [], "int16"),
    (lambda a: a.__setitem__("test_labels", a["test_labels"] * 0.5), [], "test_labels"),
    (lambda a: None, ["--slices", "tumor:2"], "tumor:2"),
], ids=["all-zero volume", "int16 volumes", "fractional labels", "tumor slices"])
def test_bad_3d_medmnist_exits_2_in_one_line(tmp_path, out, monkeypatch, capsys, change, extra, mention):
    path = tmp_path / "organmnist3d.npz"
    arrays = write_volumes(path, counts={"train": 4, "val": 4, "test": 4})
    change(arrays)
    np.savez(path, **arrays)
    assert_bad_input(["train", str(path), *FAST[:-4], *extra], out, monkeypatch, capsys, mention)
