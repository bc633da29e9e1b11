"""From run settings to a SampleTable: the volume options reach the volume reader; separate mode is per run."""

from __future__ import annotations

import pytest

from medtransfer.config import parse_config
from medtransfer.datasets import load_table, volume_options
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


def test_run_defaults_equal_the_volume_reader_defaults():
    """The two declarations (boundary config, data-layer options) must not drift apart."""
    from dataclasses import fields

    from medtransfer.config import TrainConfig
    from medtransfer.data.volume_options import VolumeOptions

    shared = [f for f in fields(VolumeOptions) if f.name in TrainConfig.model_fields and f.name != "modalities"]
    assert len(shared) == 7
    for f in shared:
        assert TrainConfig.model_fields[f.name].default == f.default, f.name
