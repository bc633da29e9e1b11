"""`inspect` of a volume set: grids per modality and misregistration found in real headers."""

from __future__ import annotations

from helpers import volume_settings

from medtransfer.data.volume_describe import describe_volumes
from medtransfer.data.volumes import load_volumes


def test_cnsl_fused_table_and_describe_report_grids_and_misregistration(cnsl):
    options = volume_settings(modalities=("T1", "T1Post", "T2"), slices="center:2")  # names match any case
    table = load_volumes(cnsl, options)
    assert len(table) == 2 and table.pixels(0).shape == (210, 210, 3)

    report = describe_volumes(cnsl, volume_settings(modalities=("T1", "T2", "flair"), slices="center:2"))
    entry = report["per_patient"]["cnsl_patient"]
    assert entry["missing"] == ["flair"] and entry["found"] == {"T1": "T1.nii.gz", "T2": "T2.nii.gz"}
    assert report["grids"]["T1"] == {"210x210x60 @ 3x3x7.08 mm": 1}
    assert report["grids"]["T2"] == {"168x210x55 @ 3.01x3x7.05 mm": 1}
    # These headers place T2's head ~6 cm from T1's: resampling is faithful to them, and inspect says so.
    assert any("T2's centre lies" in p for p in report["problems"])
    assert any("lacks flair" in p for p in report["problems"])
