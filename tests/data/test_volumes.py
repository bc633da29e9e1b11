"""NIfTI volume sets: real BraTS and clinical headers, plus tiny synthetic volumes written with nibabel."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from medtransfer.data.contact_sheet import contact_sheet
from medtransfer.data.volume_options import VolumeOptions, parse_slices
from medtransfer.data.volumes import describe_volumes, load_on_reference, load_volumes, load_volumes_separate, normalise
from medtransfer.errors import UserError

BRATS = ("t1post", "t2", "flair")


@pytest.fixture(scope="module")
def brats(shared_data: Path) -> Path:
    return shared_data / "mri" / "brats19_2013_10_1"


@pytest.fixture(scope="module")
def cnsl(shared_data: Path) -> Path:
    return shared_data / "mri" / "cnsl_patient"


def _slice_index(ref: str) -> int:
    return int(ref.rsplit("|", 1)[1])


def _write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4) if affine is None else affine), path)
    return path


def _head(shape=(12, 12, 8), seed=0) -> np.ndarray:
    """A bright ellipsoid on a zero background, so the nonzero voxels are the 'brain'."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    inside = sum(((g - c) / (c * 0.8)) ** 2 for g, c in zip(grid, centre)) <= 1
    return inside * (100 + np.random.default_rng(seed).normal(0, 10, shape))


def _patient(root: Path, pid: str, modalities=("t1", "t2", "flair"), seg: np.ndarray | None = None) -> Path:
    for k, m in enumerate(modalities):
        _write(root / pid / f"{pid}_{m}.nii.gz", _head(seed=k))
    if seg is not None:
        _write(root / pid / f"{pid}_seg.nii.gz", seg)
    return root / pid


SYNTH = VolumeOptions(modalities=("t1", "t2", "flair"), slices="center:4")


# ---- real data -----------------------------------------------------------------------------------------------------


def test_brats_fused_gives_rgb_slices_of_one_patient(brats):
    table = load_volumes(brats, VolumeOptions(modalities=BRATS, slices="center:5"))

    assert len(table) == 5 and table.frame["group"].nunique() == 1
    assert table.frame["group"].iat[0] == brats.name and set(table.frame["label"]) == {"unlabelled"}
    pixels = table.pixels(2)
    assert pixels.dtype == np.uint8 and pixels.shape == (30, 30, 3)
    assert not np.array_equal(pixels[:, :, 0], pixels[:, :, 1])  # each channel is its own modality
    assert pixels.max() > 200 and pixels[0, 0].tolist() == [0, 0, 0]  # scaled to 0-255, background black
    revived = pickle.loads(pickle.dumps(table.reader))  # DataLoader workers get a pickled copy
    np.testing.assert_array_equal(revived(table.frame["ref"].iat[2]), pixels)


def test_center_k_takes_the_middle_slices(brats):
    table = load_volumes(brats, VolumeOptions(modalities=BRATS, slices="center:6"))
    assert [_slice_index(r) for r in table.frame["ref"]] == list(range(12, 18))  # 30 axial slices
    assert len(load_volumes(brats, VolumeOptions(modalities=BRATS, slices="center:99"))) == 30


def test_tumor_k_picks_the_slices_with_the_largest_seg_area(brats):
    table = load_volumes(brats, VolumeOptions(modalities=BRATS, slices="tumor:3"))

    seg = nib.as_closest_canonical(nib.load(next(brats.glob("*_seg.nii.gz")))).get_fdata()
    # This downsampled label map rings around 0, so a voxel is tumour when it rounds to a label of 1 or more.
    area = (seg >= 0.5).sum(axis=(0, 1))
    chosen = [_slice_index(r) for r in table.frame["ref"]]
    assert len(chosen) == 3 and sorted(chosen) == sorted(np.argsort(-area, kind="stable")[:3].tolist())
    assert area[chosen].min() > np.delete(area, chosen).max()
    assert table.frame["group"].nunique() == 1


def test_cnsl_t2_resampled_onto_t1_grid_keeps_its_world_position(cnsl):
    paths = [cnsl / "T1.nii.gz", cnsl / "T1Post.nii.gz", cnsl / "T2.nii.gz"]
    stack, affine = load_on_reference(paths)
    t1 = nib.as_closest_canonical(nib.load(paths[0]))
    assert stack.shape == (3, 210, 210, 60) and np.allclose(affine, t1.affine)

    t2 = nib.load(paths[2])
    original = (t2.affine @ np.r_[ndimage.center_of_mass(t2.get_fdata()), 1])[:3]
    resampled = (affine @ np.r_[ndimage.center_of_mass(stack[2]), 1])[:3]
    assert np.all(np.abs(resampled - original) <= np.array(t1.header.get_zooms()[:3]))


def test_cnsl_fused_table_and_describe_report_grids_and_misregistration(cnsl):
    options = VolumeOptions(modalities=("T1", "T1Post", "T2"), slices="center:2")  # names match any case
    table = load_volumes(cnsl, options)
    assert len(table) == 2 and table.pixels(0).shape == (210, 210, 3)

    report = describe_volumes(cnsl, VolumeOptions(modalities=("T1", "T2", "flair"), slices="center:2"))
    entry = report["per_patient"]["cnsl_patient"]
    assert entry["missing"] == ["flair"] and entry["found"] == {"T1": "T1.nii.gz", "T2": "T2.nii.gz"}
    assert report["grids"]["T1"] == {"210x210x60 @ 3x3x7.08 mm": 1}
    assert report["grids"]["T2"] == {"168x210x55 @ 3.01x3x7.05 mm": 1}
    # These headers place T2's head ~6 cm from T1's: resampling is faithful to them, and inspect says so.
    assert any("T2's centre lies" in p for p in report["problems"])
    assert any("lacks flair" in p for p in report["problems"])


def test_contact_sheet_is_a_png(brats, tmp_path):
    table = load_volumes(brats, VolumeOptions(modalities=BRATS, slices="tumor:3"))
    out = contact_sheet(table, tmp_path / "sheets" / "brats.png", per_patient=3)

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.height > img.width  # one row per channel plus the composite, three slice columns


# ---- synthetic volumes -------------------------------------------------------------------------------------------


def test_resampling_follows_affines_not_array_shapes(tmp_path):
    """A blob at one world point on a 2 mm RAS grid and on a 1 mm LPS grid of another shape lands on one voxel."""
    world = np.array([4.0, 8.0, 2.0])  # a voxel centre on both grids
    ref_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    lps_affine = np.array([[-1.0, 0, 0, 20], [0, -1.0, 0, 25], [0, 0, 1.0, -4], [0, 0, 0, 1]])
    ref, other = np.zeros((10, 10, 6)), np.zeros((24, 30, 16))
    ref[tuple(np.linalg.solve(ref_affine, np.r_[world, 1])[:3].astype(int))] = 1
    vox = np.linalg.solve(lps_affine, np.r_[world, 1])[:3].astype(int)
    other[tuple(slice(v - 1, v + 2) for v in vox)] = 1  # 3 mm cube: survives 2 mm sampling
    paths = [_write(tmp_path / "a.nii.gz", ref, ref_affine), _write(tmp_path / "b.nii", other, lps_affine)]

    stack, affine = load_on_reference(paths)
    assert stack.shape == (2, 10, 10, 6) and np.allclose(affine, ref_affine)
    assert np.unravel_index(stack[1].argmax(), stack[1].shape) == np.unravel_index(ref.argmax(), ref.shape)
    assert stack[1].max() == pytest.approx(1.0) and stack[1].sum() == pytest.approx(1.0)


def test_all_nonzero_keeps_slices_with_brain(tmp_path):
    data = _head()
    data[:, :, :2] = data[:, :, -3:] = 0
    for k, m in enumerate(("t1", "t2", "flair")):
        _write(tmp_path / "p1" / f"{m.upper()}.nii", data if k == 0 else _head(seed=k))  # bare names, any case
    table = load_volumes(tmp_path, VolumeOptions(modalities=("t1", "t2", "flair"), slices="all-nonzero"))
    expected = [i for i in range(2, 5) if data[:, :, i].any()]
    assert [_slice_index(r) for r in table.frame["ref"]] == expected


def test_separate_mode_gives_grey_tables_per_modality(tmp_path):
    _patient(tmp_path, "p1")
    _patient(tmp_path, "p2")
    options = VolumeOptions(modalities=("t1", "t2", "flair"), modality_mode="separate", slices="center:2")

    tables = load_volumes_separate(tmp_path, options)
    assert list(tables) == ["t1", "t2", "flair"]
    t2 = tables["t2"]
    assert len(t2) == 4 and t2.frame["sample_id"].str.contains("/t2/").all()
    assert t2.pixels(0).shape == (12, 12) and t2.pixels(0).dtype == np.uint8
    assert len({t.fingerprint for t in tables.values()}) == 3
    combined = load_volumes(tmp_path, options)
    assert len(combined) == 12 and set(combined.frame["group"]) == {"p1", "p2"}


def test_labels_from_csv_or_class_folders(tmp_path):
    flat, nested = tmp_path / "flat", tmp_path / "nested"
    for pid in ("p1", "p2"):
        _patient(flat, pid)
    (tmp_path / "labels.csv").write_text("patient_id,label\np1,glioma\np2,lymphoma\n")
    table = load_volumes(flat, VolumeOptions(modalities=("t1",), labels_csv=str(tmp_path / "labels.csv"),
                                             slices="center:2", normalize="zscore"))
    assert dict(zip(table.frame["group"], table.frame["label"])) == {"p1": "glioma", "p2": "lymphoma"}
    assert table.pixels(0).shape == (12, 12)

    _patient(nested / "glioma", "a")
    _patient(nested / "lymphoma", "b")
    table = load_volumes(nested, SYNTH)
    assert table.classes == ["glioma", "lymphoma"] and len(table) == 8


def test_fingerprint_is_stable_and_follows_options(tmp_path):
    _patient(tmp_path, "p1")
    first, again = load_volumes(tmp_path, SYNTH), load_volumes(tmp_path, SYNTH)
    other = load_volumes(tmp_path, VolumeOptions(modalities=("t1", "t2", "flair"), slices="center:4", plane="coronal"))
    assert first.fingerprint == again.fingerprint != other.fingerprint


# ---- errors: one line naming the input and the fix ------------------------------------------------------------


def test_missing_modality_names_the_patient_unless_skipped(tmp_path):
    _patient(tmp_path, "p1")
    _patient(tmp_path, "p2", modalities=("t1", "t2"))
    with pytest.raises(UserError, match=r"patient 'p2'.*'flair'.*\{case\}_\{modality\}\.nii\.gz.*--skip-incomplete"):
        load_volumes(tmp_path, SYNTH)

    table = load_volumes(tmp_path, VolumeOptions(modalities=SYNTH.modalities, slices="center:4", skip_incomplete=True))
    assert set(table.frame["group"]) == {"p1"} and any("skipped 1 of 2" in n for n in table.notes)


def test_unknown_modality_lists_those_seen(tmp_path):
    _patient(tmp_path, "p1")
    with pytest.raises(UserError, match=r"modality 'dwi'.*seen: \['flair', 't1', 't2'\]"):
        load_volumes(tmp_path, VolumeOptions(modalities=("dwi",), slices="center:2"))


def test_labels_csv_that_does_not_match_the_folders(tmp_path):
    for pid in ("p1", "p2"):
        _patient(tmp_path / "set", pid)
    csv = tmp_path / "labels.csv"
    csv.write_text("patient_id,label\np1,a\np3,b\n")
    with pytest.raises(UserError, match=r"labels\.csv.*\['p3'\].*\['p2'\].*patient_id"):
        load_volumes(tmp_path / "set", VolumeOptions(modalities=("t1",), labels_csv=str(csv)))


def test_tumor_slices_need_a_seg_file(tmp_path):
    _patient(tmp_path, "p1")
    with pytest.raises(UserError, match=r"modality 'seg'.*tumor:K"):
        load_volumes(tmp_path, VolumeOptions(modalities=("t1",), slices="tumor:2"))


def _bad_file(tmp_path: Path, kind: str) -> Path:
    _patient(tmp_path, "p1", modalities=("t1", "t2"))
    bad = tmp_path / "p1" / "p1_flair.nii.gz"
    if kind == "2d":
        _write(bad, _head()[:, :, 4])
    elif kind == "zero-affine":
        img = nib.Nifti1Image(_head().astype(np.float32), np.eye(4))
        img.header.set_qform(None, code=0)
        img.header.set_sform(np.zeros((4, 4)), code=1)
        nib.save(nib.Nifti1Image(img.dataobj, None, header=img.header), bad)
    else:
        blob = _write(bad, _head()).read_bytes()
        bad.write_bytes(blob[: len(blob) // 2] if kind == "truncated" else blob[:100])
    return bad


@pytest.mark.parametrize(("kind", "says"), [("2d", "2D image"), ("zero-affine", "non-invertible affine"),
                                            ("truncated", "truncated or corrupt"), ("cut-header", "truncated or corrupt")])
def test_bad_files_are_named(tmp_path, kind, says):
    bad = _bad_file(tmp_path, kind)
    with pytest.raises(UserError, match=says) as caught:
        load_volumes(tmp_path, SYNTH)
    assert str(bad) in str(caught.value) and "\n" not in str(caught.value)


def test_file_damaged_after_loading_fails_on_read_with_its_name(tmp_path):
    table = load_volumes(_patient(tmp_path, "p1"), SYNTH)  # a patient folder as ROOT: a one-patient set
    t2 = tmp_path / "p1" / "p1_t2.nii.gz"
    t2.write_bytes(t2.read_bytes()[:-200])
    with pytest.raises(UserError, match="truncated or corrupt") as caught:
        table.pixels(0)
    assert str(t2) in str(caught.value)


@pytest.mark.parametrize("text", ["middle:4", "center", "center:0", "tumor:-2", "all-nonzero:3", ""])
def test_bad_slices_text(text):
    with pytest.raises(UserError, match=r"slices .*center:16"):
        parse_slices(text)
    with pytest.raises(UserError, match="slices"):
        VolumeOptions(slices=text)


def test_options_are_checked_together():
    with pytest.raises(UserError, match=r"1 \(grey\) or 3 \(RGB\).*list 1 or 3 modalities"):
        VolumeOptions(modalities=("t1", "t2"))
    with pytest.raises(UserError, match=r"plane 'oblique'.*normalize 'minmax'"):
        VolumeOptions(plane="oblique", normalize="minmax")
    assert parse_slices("Tumor:8") == ("tumor", 8) and parse_slices("all-nonzero") == ("all-nonzero", 0)


# ---- bad volumes: 4D, all zeros, NaN voxels, duplicate patients, grids that do not overlap -----------------------


def test_4d_series_is_refused_where_a_volume_is_expected(tmp_path):
    _patient(tmp_path, "p1", modalities=("t1", "t2"))
    bad = _write(tmp_path / "p1" / "p1_flair.nii.gz", np.stack([_head()] * 3, axis=-1))
    with pytest.raises(UserError, match=r"4D series \(shape \(12, 12, 8, 3\)\)") as caught:
        load_volumes(tmp_path, SYNTH)
    assert str(bad) in caught.value.line()
    _write(bad, _head()[..., None])  # a trailing axis of length 1 is still one volume
    assert len(load_volumes(tmp_path, SYNTH)) == 4


def test_all_zero_volume_is_refused_naming_the_patient(tmp_path):
    _patient(tmp_path, "p1")
    _patient(tmp_path, "p2", modalities=("t1", "flair"))
    _write(tmp_path / "p2" / "p2_t2.nii.gz", np.zeros((12, 12, 8)))
    table = load_volumes(tmp_path, SYNTH)  # center:K reads headers only: found when the voxels are read
    row = int(table.frame.index[table.frame["group"] == "p2"][0])
    with pytest.raises(UserError, match=r"p2_t2\.nii\.gz: \(patient 'p2'\) is all zeros"):
        table.pixels(row)
    _write(tmp_path / "p2" / "p2_t1.nii.gz", np.zeros((12, 12, 8)))  # all-nonzero reads the reference at load
    with pytest.raises(UserError, match=r"p2_t1\.nii\.gz: \(patient 'p2'\) is all zeros"):
        load_volumes(tmp_path, VolumeOptions(modalities=("t1", "t2", "flair"), slices="all-nonzero"))


def test_nan_voxels_are_refused_never_a_channel_of_zeros(tmp_path):
    _patient(tmp_path, "p1", modalities=("t1", "t2"))
    data = _head(seed=5)
    data[0, 0, :3] = np.nan
    bad = _write(tmp_path / "p1" / "p1_flair.nii.gz", data)
    table = load_volumes(tmp_path, SYNTH)
    with pytest.raises(UserError, match=r"has 3 NaN or infinite voxel\(s\) of 1152") as caught:
        table.pixels(0)
    assert str(bad) in caught.value.line()
    report = describe_volumes(tmp_path, SYNTH)  # inspect lists it among the problems
    assert any("3 NaN" in p for p in report["problems"])


def test_patient_ids_equal_but_for_case_are_refused(tmp_path):
    _patient(tmp_path, "P01")
    _patient(tmp_path, "p01")
    with pytest.raises(UserError, match=r"'P01' and 'p01' differ only in case"):
        load_volumes(tmp_path, SYNTH)


def test_modalities_that_do_not_overlap_in_world_space_are_refused(tmp_path):
    _patient(tmp_path, "p1", modalities=("t1", "t2"))
    far = np.eye(4)
    far[:3, 3] = [0, 0, 500]  # half a metre above the reference: no voxel in common
    bad = _write(tmp_path / "p1" / "p1_flair.nii.gz", _head(), far)
    with pytest.raises(UserError, match=r"z 499\.5\.\.507\.5 mm.*do not overlap") as caught:
        load_volumes(tmp_path, SYNTH)
    assert str(bad) in caught.value.line()
    assert any("do not overlap" in p for p in describe_volumes(tmp_path, SYNTH)["problems"])
    near = np.eye(4)
    near[:3, 3] = [0, 0, 6]  # overlapping by two slices: read (inspect reports the shift)
    _write(bad, _head(), near)
    assert len(load_volumes(tmp_path, SYNTH)) == 4


def test_constant_brain_is_white_not_blank():
    volume = np.zeros((4, 4, 4))
    volume[1:3, 1:3, 1:3] = 7.0
    for method in ("percentile", "zscore"):
        out = normalise(volume, method)
        assert out[1, 1, 1] == 255 and out[0, 0, 0] == 0


def test_overlapping_grids_that_share_only_background_are_refused_on_read(tmp_path):
    _patient(tmp_path, "p1", modalities=("t1", "t2"))
    edge = np.eye(4)
    edge[:3, 3] = [0, 0, 7]  # the boxes share one slice, where this head's ellipsoid has no voxel
    bad = _write(tmp_path / "p1" / "p1_flair.nii.gz", _head(), edge)
    table = load_volumes(tmp_path, SYNTH)
    with pytest.raises(UserError, match=r"no nonzero voxel on p1_t1\.nii\.gz's grid") as caught:
        table.pixels(0)
    assert str(bad) in caught.value.line()
