"""NIfTI volume sets as sample tables: real BraTS slices, slice rules, separate modalities, fingerprints."""

from __future__ import annotations

import pickle

import nibabel as nib
import numpy as np
import pytest
from data.nifti_files import BRATS, SYNTH, head_volume, slice_index, write_nifti, write_patient
from helpers import volume_settings
from PIL import Image

from medtransfer.data.contact_sheet import contact_sheet
from medtransfer.data.volume_options import parse_slices
from medtransfer.data.volumes import load_volumes, load_volumes_separate
from medtransfer.errors import UserError


def test_brats_fused_gives_rgb_slices_of_one_patient(brats):
    table = load_volumes(brats, volume_settings(modalities=BRATS, slices="center:5"))

    assert len(table) == 5 and table.frame["group"].nunique() == 1
    assert table.frame["group"].iat[0] == brats.name and set(table.frame["label"]) == {"unlabelled"}
    pixels = table.pixels(2)
    assert pixels.dtype == np.uint8 and pixels.shape == (30, 30, 3)
    assert not np.array_equal(pixels[:, :, 0], pixels[:, :, 1])  # each channel is its own modality
    assert pixels.max() > 200 and pixels[0, 0].tolist() == [0, 0, 0]  # scaled to 0-255, background black
    revived = pickle.loads(pickle.dumps(table.reader))  # DataLoader workers get a pickled copy
    np.testing.assert_array_equal(revived(table.frame["ref"].iat[2]), pixels)


def test_center_k_takes_the_middle_slices(brats):
    table = load_volumes(brats, volume_settings(modalities=BRATS, slices="center:6"))
    assert [slice_index(r) for r in table.frame["ref"]] == list(range(12, 18))  # 30 axial slices
    assert len(load_volumes(brats, volume_settings(modalities=BRATS, slices="center:99"))) == 30


def test_tumor_k_picks_the_slices_with_the_largest_seg_area(brats):
    table = load_volumes(brats, volume_settings(modalities=BRATS, slices="tumor:3"))

    seg = nib.as_closest_canonical(nib.load(next(brats.glob("*_seg.nii.gz")))).get_fdata()
    # This downsampled label map rings around 0, so a voxel is tumour when it rounds to a label of 1 or more.
    area = (seg >= 0.5).sum(axis=(0, 1))
    chosen = [slice_index(r) for r in table.frame["ref"]]
    assert len(chosen) == 3 and sorted(chosen) == sorted(np.argsort(-area, kind="stable")[:3].tolist())
    assert area[chosen].min() > np.delete(area, chosen).max()
    assert table.frame["group"].nunique() == 1


def test_contact_sheet_is_a_png(brats, tmp_path):
    table = load_volumes(brats, volume_settings(modalities=BRATS, slices="tumor:3"))
    out = contact_sheet(table, tmp_path / "sheets" / "brats.png", per_patient=3)

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.height > img.width  # one row per channel plus the composite, three slice columns


def test_all_nonzero_keeps_slices_with_brain(tmp_path):
    data = head_volume()
    data[:, :, :2] = data[:, :, -3:] = 0
    for k, m in enumerate(("t1", "t2", "flair")):
        write_nifti(tmp_path / "p1" / f"{m.upper()}.nii", data if k == 0 else head_volume(seed=k))  # bare names, any case
    table = load_volumes(tmp_path, volume_settings(modalities=("t1", "t2", "flair"), slices="all-nonzero"))
    expected = [i for i in range(2, 5) if data[:, :, i].any()]
    assert [slice_index(r) for r in table.frame["ref"]] == expected


def test_separate_mode_gives_grey_tables_per_modality(tmp_path):
    write_patient(tmp_path, "p1")
    write_patient(tmp_path, "p2")
    options = volume_settings(modalities=("t1", "t2", "flair"), modality_mode="separate", slices="center:2")

    tables = load_volumes_separate(tmp_path, options)
    assert list(tables) == ["t1", "t2", "flair"]
    t2 = tables["t2"]
    assert len(t2) == 4 and t2.frame["sample_id"].str.contains("/t2/").all()
    assert t2.pixels(0).shape == (12, 12) and t2.pixels(0).dtype == np.uint8
    assert len({t.fingerprint for t in tables.values()}) == 3
    combined = load_volumes(tmp_path, options)
    assert len(combined) == 12 and set(combined.frame["group"]) == {"p1", "p2"}


def test_fingerprint_is_stable_and_follows_options(tmp_path):
    write_patient(tmp_path, "p1")
    first, again = load_volumes(tmp_path, SYNTH), load_volumes(tmp_path, SYNTH)
    other = load_volumes(tmp_path, volume_settings(modalities=("t1", "t2", "flair"), slices="center:4", plane="coronal"))
    assert first.fingerprint == again.fingerprint != other.fingerprint


@pytest.mark.parametrize("text", ["middle:4", "center", "center:0", "tumor:-2", "all-nonzero:3", ""])
def test_bad_slices_text(text):
    with pytest.raises(UserError, match=r"slices .*center:16"):
        parse_slices(text)
    with pytest.raises(UserError, match="slices"):
        volume_settings(slices=text)


def test_options_are_checked_together():
    with pytest.raises(UserError, match=r"1 \(grey\) or 3 \(RGB\).*list 1 or 3 modalities"):
        volume_settings(modalities=("t1", "t2"))
    with pytest.raises(UserError, match=r"plane 'oblique'.*normalize 'minmax'"):
        volume_settings(plane="oblique", normalize="minmax")
    assert parse_slices("Tumor:8") == ("tumor", 8) and parse_slices("all-nonzero") == ("all-nonzero", 0)
