"""DICOM: series grouping and modality matching, volume slice order and affine, radiograph grey mapping, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000, UID, ExplicitVRLittleEndian, generate_uid

import medtransfer.data.dicom_files as dicom_files
from medtransfer.data.dicom_series import Series, find_series, match_modalities, read_volume
from medtransfer.data.file_kinds import is_dicom
from medtransfer.data.images import FileReader
from medtransfer.data.radiograph import read_radiograph
from medtransfer.errors import UserError

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def write_dicom(path: Path, pixels: np.ndarray | None, syntax: str = ExplicitVRLittleEndian, **attrs) -> Path:
    """A minimal file written with pydicom itself; `attrs` are DICOM keywords set last (they override defaults)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = attrs.pop("SOPClassUID", CR_STORAGE)
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = "P1"
    ds.SeriesInstanceUID = attrs.pop("SeriesInstanceUID", generate_uid())
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape[-2:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = pixels.dtype.itemsize * 8
        ds.BitsStored = 12 if pixels.dtype == np.uint16 else ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = int(pixels.dtype.kind == "i")
        if pixels.ndim == 3:
            ds.NumberOfFrames = pixels.shape[0]
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return path


def _series(uid: str, description: str) -> Series:
    return Series(uid=uid, description=description, patient_id="P1")


# --- real data ---------------------------------------------------------------------------------------------------


def test_upenn_folder_is_four_series_matched_by_description(shared_data):
    root = shared_data / "mri" / "upenn_gbm_dicom" / "UPENN-GBM-00621"
    series = find_series(root)
    assert len(series) == 4 and series.skipped == []
    matched = match_modalities(series, ["flair", "t2", "t1", "t1post"])
    assert matched["flair"].description == "t2_Flair_axial_T: Processed_CaPTk"
    assert matched["t2"].description == "Axial T2 tse: Processed_CaPTk"
    assert matched["t1"].description == "t1 axial_T: Processed_CaPTk"  # "Processed" holds "ce": not a contrast word
    assert matched["t1post"].description == "t1 axial stealth-post_T : Processed_CaPTk"
    volume, affine = read_volume(matched["flair"])
    assert volume.dtype == np.float32 and volume.shape == (9, 12, 1) and affine.shape == (4, 4)


# --- radiographs ------------------------------------------------------------------------------------------------


def _ramp() -> np.ndarray:
    return np.linspace(0, 4095, 64).round().astype(np.uint16).reshape(8, 8)


def test_monochrome1_is_inverted(tmp_path):
    mono2 = read_radiograph(write_dicom(tmp_path / "m2.dcm", _ramp()))
    mono1 = read_radiograph(write_dicom(tmp_path / "m1.dcm", _ramp(), PhotometricInterpretation="MONOCHROME1"))
    assert mono2.dtype == np.uint8 and mono2.shape == (8, 8)
    np.testing.assert_array_equal(mono1, 255 - mono2)


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    """Stored v with slope 2 and intercept -1000 reads like a signed file storing 2v - 1000 outright."""
    stored = np.array([[0, 100, 600], [1200, 1500, 2047]], dtype=np.uint16)
    window = {"WindowCenter": 500, "WindowWidth": 2000}  # a window makes absolute values matter, not just their order
    scaled = read_radiograph(write_dicom(tmp_path / "s.dcm", stored, RescaleSlope=2, RescaleIntercept=-1000, **window))
    prescaled = (stored.astype(np.int16) * 2 - 1000).astype(np.int16)
    plain = read_radiograph(write_dicom(tmp_path / "p.dcm", prescaled, **window))
    np.testing.assert_array_equal(scaled, plain)
    # Values -1000, -800, 200, 1400, 2000, 3094 through the window [-500, 1500]:
    np.testing.assert_array_equal(scaled, [[0, 0, 89], [242, 255, 255]])
    unscaled = read_radiograph(write_dicom(tmp_path / "u.dcm", stored, **window))
    assert not np.array_equal(scaled, unscaled)


def test_16bit_range_survives_to_8_bits(tmp_path):
    raw = np.array([[0, 100, 200, 300], [1000, 2000, 3000, 4095]], dtype=np.uint16)
    out = read_radiograph(write_dicom(tmp_path / "r.dcm", raw))
    assert out.min() == 0 and out.max() == 255
    assert (np.diff(out.ravel()) > 0).all()  # monotonic, and levels 100 apart stay distinct (no low-byte clipping)


def test_window_center_and_width_are_applied(tmp_path):
    raw = np.array([[0, 900, 1000, 1100, 4095]], dtype=np.uint16)
    out = read_radiograph(write_dicom(tmp_path / "w.dcm", raw, WindowCenter=1000, WindowWidth=200))
    assert out[0, 0] == 0 and out[0, 1] == 0  # at or below the window floor
    assert out[0, 3] == 255 and out[0, 4] == 255  # above the ceiling
    assert 120 <= out[0, 2] <= 135


def test_voi_lut_sequence_wins_over_min_max(tmp_path):
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 0, 12])  # LUTDescriptor: 4 entries, first input 0, 12-bit output
    item.add_new(0x00283006, "US", [0, 4095, 1000, 2000])  # LUTData: deliberately non-monotonic
    out = read_radiograph(write_dicom(tmp_path / "lut.dcm", np.array([[0, 1, 2, 3, 9]], dtype=np.uint16),
                                      VOILUTSequence=[item]))
    np.testing.assert_array_equal(out, [[0, 255, 62, 125, 125]])  # 9 is past the table: its last entry


def test_reader_is_picklable_and_is_dicom(tmp_path):
    path = write_dicom(tmp_path / "x", _ramp())  # no suffix: the preamble decides
    (tmp_path / "notes.txt").write_text("hello")
    assert is_dicom(path) and not is_dicom(tmp_path / "notes.txt")
    reader = pickle.loads(pickle.dumps(FileReader()))  # tables of .dcm files read through it
    dcm = write_dicom(tmp_path / "x.dcm", _ramp())
    np.testing.assert_array_equal(reader(str(dcm)), read_radiograph(path))


# --- volumes ----------------------------------------------------------------------------------------------------


def test_volume_slices_follow_position_and_affine_maps_to_ras(tmp_path):
    uid = generate_uid()
    orientation = [0, 1, 0, 0, 0, -1]  # sagittal: the row cosine points +Y (posterior), the column cosine −Z (down)
    origin = np.array([10.0, -20.0, 30.0])
    normal = np.cross(orientation[:3], orientation[3:])  # (−1, 0, 0)
    order = [3, 0, 4, 1, 2]  # files written out of order, and named so name order is wrong too
    for name, k in enumerate(order):
        write_dicom(tmp_path / f"{name:02d}.dcm", np.full((3, 4), 100 + k, dtype=np.uint16), SOPClassUID=MR_STORAGE,
                    SeriesInstanceUID=uid, SeriesDescription="sag T1", ImageOrientationPatient=orientation,
                    ImagePositionPatient=list(origin + normal * 2.5 * k), PixelSpacing=[0.5, 0.8],
                    InstanceNumber=name + 1, RescaleSlope=1, RescaleIntercept=-100)
    (tmp_path / "README.txt").write_text("not DICOM")
    series = find_series(tmp_path)
    assert len(series) == 1 and [p.name for p in series.skipped] == ["README.txt"]
    volume, affine = read_volume(series[0])
    assert volume.shape == (4, 3, 5)  # (columns, rows, slices)
    assert [float(volume[0, 0, k]) for k in range(5)] == [0, 1, 2, 3, 4]  # slice k holds the value written at k
    lps_to_ras = np.array([-1, -1, 1])
    for k in range(5):
        expected = (origin + normal * 2.5 * k) * lps_to_ras
        np.testing.assert_allclose(affine @ [0, 0, k, 1], [*expected, 1], atol=1e-6)
    # One column step moves 0.8 mm along the row cosine (+Y in LPS, −Y in RAS); one row step 0.5 mm along −Z.
    np.testing.assert_allclose(affine @ [1, 1, 0, 1], [*((origin + [0, 0.8, -0.5]) * lps_to_ras), 1], atol=1e-6)


# --- errors -----------------------------------------------------------------------------------------------------


def test_two_flair_series_are_ambiguous_and_the_message_lists_all():
    series = [_series("1.2.3.111111111", "FLAIR"), _series("1.2.3.222222222", "FLAIR"), _series("1.2.3.3", "T2")]
    with pytest.raises(UserError, match="2 series match 'flair'") as err:
        match_modalities(series, ["flair", "t2"])
    assert "11111111" in str(err.value) and "22222222" in str(err.value) and "'T2'" in str(err.value)


def test_one_series_matching_two_modalities_is_ambiguous():
    with pytest.raises(UserError, match="matches 'flair' and 't1'"):
        match_modalities([_series("1.1", "T1 FLAIR")], ["flair", "t1"])


def test_missing_modality_lists_what_was_found():
    with pytest.raises(UserError, match="no series matches 't1post'.*found: 'T1 axial'"):
        match_modalities([_series("1.1", "T1 axial")], ["t1post"])


def test_rules_can_be_overridden():
    series = [_series("1.1", "MPRAGE"), _series("1.2", "FLAIR")]
    assert match_modalities(series, ["t1"], rules={"t1": "mprage"})["t1"].uid == "1.1"


def test_empty_series_is_a_user_error(tmp_path):
    write_dicom(tmp_path / "sr.dcm", None, SeriesDescription="report")  # no Rows: no image at all
    write_dicom(tmp_path / "hdr.dcm", None, SeriesDescription="header only", Rows=4, Columns=4)
    by_description = {s.description: s for s in find_series(tmp_path)}
    with pytest.raises(UserError, match="holds no images"):
        read_volume(by_description["report"])
    with pytest.raises(UserError, match="no pixel data"):
        read_volume(by_description["header only"])


def test_unknown_transfer_syntax_names_file_and_plugin(tmp_path):
    path = write_dicom(tmp_path / "odd.dcm", _ramp(), syntax="1.2.3.999")
    with pytest.raises(UserError, match=r"odd\.dcm: unknown transfer syntax 1\.2\.3\.999.*python-gdcm"):
        read_radiograph(path)


def test_undecodable_jpeg2000_says_which_plugin_is_missing(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "j2k.dcm", None, syntax=JPEG2000, Rows=8, Columns=8, SamplesPerPixel=1,
                       PhotometricInterpretation="MONOCHROME2", BitsAllocated=16, BitsStored=12, HighBit=11,
                       PixelRepresentation=0, PixelData=encapsulate([b"not a codestream"]))
    with pytest.raises(UserError, match=r"j2k\.dcm: cannot decode its JPEG 2000"):  # plugins present, data bad
        read_radiograph(path)

    class NoPlugins:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0"]

    monkeypatch.setattr(dicom_files, "get_decoder", lambda uid: NoPlugins())
    with pytest.raises(UserError, match=r"j2k\.dcm: no installed plugin decodes .*pylibjpeg-openjpeg"):
        read_radiograph(path)


def test_palette_colour_is_looked_up_not_read_as_grey(tmp_path):
    lut = {"RedPaletteColorLookupTableDescriptor": [2, 0, 8], "GreenPaletteColorLookupTableDescriptor": [2, 0, 8],
           "BluePaletteColorLookupTableDescriptor": [2, 0, 8], "RedPaletteColorLookupTableData": bytes([255, 0]),
           "GreenPaletteColorLookupTableData": bytes([0, 255]), "BluePaletteColorLookupTableData": bytes([0, 0])}
    path = write_dicom(tmp_path / "pal.dcm", np.array([[0, 1]], dtype=np.uint8), PhotometricInterpretation="PALETTE COLOR",
                       **lut)
    np.testing.assert_array_equal(read_radiograph(path), [[[255, 0, 0], [0, 255, 0]]])


def test_multi_frame_file_is_not_a_radiograph(tmp_path):
    path = write_dicom(tmp_path / "cine.dcm", np.zeros((3, 4, 4), dtype=np.uint16))
    with pytest.raises(UserError, match="has 3 frames"):
        read_radiograph(path)


def test_non_dicom_file_is_not_a_radiograph(tmp_path):
    path = tmp_path / "chest.dcm"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(UserError, match=r"chest\.dcm: is not a DICOM file"):
        read_radiograph(path)
