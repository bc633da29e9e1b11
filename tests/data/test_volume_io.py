"""Reading NIfTI volumes: resampling by affines, and bad files refused in one line naming them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from data.nifti_files import SYNTH, head_volume, write_nifti, write_patient
from helpers import volume_settings
from scipy import ndimage

from medtransfer.data.volume_describe import describe_volumes
from medtransfer.data.volume_io import load_on_reference
from medtransfer.data.volumes import load_volumes
from medtransfer.errors import UserError


def test_cnsl_t2_resampled_onto_t1_grid_keeps_its_world_position(cnsl):
    paths = [cnsl / "T1.nii.gz", cnsl / "T1Post.nii.gz", cnsl / "T2.nii.gz"]
    stack, affine = load_on_reference(paths)
    t1 = nib.as_closest_canonical(nib.load(paths[0]))
    assert stack.shape == (3, 210, 210, 60) and np.allclose(affine, t1.affine)

    t2 = nib.load(paths[2])
    original = (t2.affine @ np.r_[ndimage.center_of_mass(t2.get_fdata()), 1])[:3]
    resampled = (affine @ np.r_[ndimage.center_of_mass(stack[2]), 1])[:3]
    assert np.all(np.abs(resampled - original) <= np.array(t1.header.get_zooms()[:3]))


def test_resampling_follows_affines_not_array_shapes(tmp_path):
    """A blob at one world point on a 2 mm RAS grid and on a 1 mm LPS grid of another shape lands on one voxel."""
    world = np.array([4.0, 8.0, 2.0])  # a voxel centre on both grids
    ref_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    lps_affine = np.array([[-1.0, 0, 0, 20], [0, -1.0, 0, 25], [0, 0, 1.0, -4], [0, 0, 0, 1]])
    ref, other = np.zeros((10, 10, 6)), np.zeros((24, 30, 16))
    ref[tuple(np.linalg.solve(ref_affine, np.r_[world, 1])[:3].astype(int))] = 1
    vox = np.linalg.solve(lps_affine, np.r_[world, 1])[:3].astype(int)
    other[tuple(slice(v - 1, v + 2) for v in vox)] = 1  # 3 mm cube: survives 2 mm sampling
    paths = [write_nifti(tmp_path / "a.nii.gz", ref, ref_affine), write_nifti(tmp_path / "b.nii", other, lps_affine)]

    stack, affine = load_on_reference(paths)
    assert stack.shape == (2, 10, 10, 6) and np.allclose(affine, ref_affine)
    assert np.unravel_index(stack[1].argmax(), stack[1].shape) == np.unravel_index(ref.argmax(), ref.shape)
    assert stack[1].max() == pytest.approx(1.0) and stack[1].sum() == pytest.approx(1.0)


def _bad_file(tmp_path: Path, kind: str) -> Path:
    write_patient(tmp_path, "p1", modalities=("t1", "t2"))
    bad = tmp_path / "p1" / "p1_flair.nii.gz"
    if kind == "2d":
        write_nifti(bad, head_volume()[:, :, 4])
    elif kind == "zero-affine":
        img = nib.Nifti1Image(head_volume().astype(np.float32), np.eye(4))
        img.header.set_qform(None, code=0)
        img.header.set_sform(np.zeros((4, 4)), code=1)
        nib.save(nib.Nifti1Image(img.dataobj, None, header=img.header), bad)
    else:
        blob = write_nifti(bad, head_volume()).read_bytes()
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
    table = load_volumes(write_patient(tmp_path, "p1"), SYNTH)  # a patient folder as ROOT: a one-patient set
    t2 = tmp_path / "p1" / "p1_t2.nii.gz"
    t2.write_bytes(t2.read_bytes()[:-200])
    with pytest.raises(UserError, match="truncated or corrupt") as caught:
        table.pixels(0)
    assert str(t2) in str(caught.value)


def test_4d_series_is_refused_where_a_volume_is_expected(tmp_path):
    write_patient(tmp_path, "p1", modalities=("t1", "t2"))
    bad = write_nifti(tmp_path / "p1" / "p1_flair.nii.gz", np.stack([head_volume()] * 3, axis=-1))
    with pytest.raises(UserError, match=r"4D series \(shape \(12, 12, 8, 3\)\)") as caught:
        load_volumes(tmp_path, SYNTH)
    assert str(bad) in caught.value.line()
    write_nifti(bad, head_volume()[..., None])  # a trailing axis of length 1 is still one volume
    assert len(load_volumes(tmp_path, SYNTH)) == 4


def test_all_zero_volume_is_refused_naming_the_patient(tmp_path):
    write_patient(tmp_path, "p1")
    write_patient(tmp_path, "p2", modalities=("t1", "flair"))
    write_nifti(tmp_path / "p2" / "p2_t2.nii.gz", np.zeros((12, 12, 8)))
    table = load_volumes(tmp_path, SYNTH)  # center:K reads headers only: found when the voxels are read
    row = int(table.frame.index[table.frame["group"] == "p2"][0])
    with pytest.raises(UserError, match=r"p2_t2\.nii\.gz: \(patient 'p2'\) is all zeros"):
        table.pixels(row)
    write_nifti(tmp_path / "p2" / "p2_t1.nii.gz", np.zeros((12, 12, 8)))  # all-nonzero reads the reference at load
    with pytest.raises(UserError, match=r"p2_t1\.nii\.gz: \(patient 'p2'\) is all zeros"):
        load_volumes(tmp_path, volume_settings(modalities=("t1", "t2", "flair"), slices="all-nonzero"))


def test_nan_voxels_are_refused_never_a_channel_of_zeros(tmp_path):
    write_patient(tmp_path, "p1", modalities=("t1", "t2"))
    data = head_volume(seed=5)
    data[0, 0, :3] = np.nan
    bad = write_nifti(tmp_path / "p1" / "p1_flair.nii.gz", data)
    table = load_volumes(tmp_path, SYNTH)
    with pytest.raises(UserError, match=r"has 3 NaN or infinite voxel\(s\) of 1152") as caught:
        table.pixels(0)
    assert str(bad) in caught.value.line()
    report = describe_volumes(tmp_path, SYNTH)  # inspect lists it among the problems
    assert any("3 NaN" in p for p in report["problems"])


def test_modalities_that_do_not_overlap_in_world_space_are_refused(tmp_path):
    write_patient(tmp_path, "p1", modalities=("t1", "t2"))
    far = np.eye(4)
    far[:3, 3] = [0, 0, 500]  # half a metre above the reference: no voxel in common
    bad = write_nifti(tmp_path / "p1" / "p1_flair.nii.gz", head_volume(), far)
    with pytest.raises(UserError, match=r"z 499\.5\.\.507\.5 mm.*do not overlap") as caught:
        load_volumes(tmp_path, SYNTH)
    assert str(bad) in caught.value.line()
    assert any("do not overlap" in p for p in describe_volumes(tmp_path, SYNTH)["problems"])
    near = np.eye(4)
    near[:3, 3] = [0, 0, 6]  # overlapping by two slices: read (inspect reports the shift)
    write_nifti(bad, head_volume(), near)
    assert len(load_volumes(tmp_path, SYNTH)) == 4


def test_overlapping_grids_that_share_only_background_are_refused_on_read(tmp_path):
    write_patient(tmp_path, "p1", modalities=("t1", "t2"))
    edge = np.eye(4)
    edge[:3, 3] = [0, 0, 7]  # the boxes share one slice, where this head's ellipsoid has no voxel
    bad = write_nifti(tmp_path / "p1" / "p1_flair.nii.gz", head_volume(), edge)
    table = load_volumes(tmp_path, SYNTH)
    with pytest.raises(UserError, match=r"no nonzero voxel on p1_t1\.nii\.gz's grid") as caught:
        table.pixels(0)
    assert str(bad) in caught.value.line()
