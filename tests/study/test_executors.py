"""Which frozen runs share a feature-cache entry: they wait for one extraction (Ray) and are costed once (dry run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medtransfer.config import parse_config
from medtransfer.study.executors import cache_group

SYNTH = "synthetic:n=24,size=16,classes=2"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """A local checkpoint: its content, not the run's seed, identifies the weights."""
    path = tmp_path_factory.mktemp("weights") / "w.safetensors"
    path.write_bytes(b"not read: only hashed")
    return path


def _cfg(weights: Path | str, **values):
    return parse_config({"data": "/v", "backbone": "resnet18", "weights": str(weights), **values})


def test_runs_reading_the_same_features_share_a_group(weights_file):
    base = cache_group(_cfg(weights_file))
    assert cache_group(_cfg(weights_file, seed=3)) == base  # a local checkpoint: the seed does not change them
    assert cache_group(_cfg(weights_file, val_fraction=0.3, head="mlp")) == base  # the split picks rows of one table
    assert cache_group(_cfg(weights_file, image_size=224)) == base  # resnet18's own input size, given or not
    assert cache_group(_cfg(weights_file, mode="finetune")) is None


def test_anything_that_changes_the_table_or_the_model_splits_the_group(weights_file):
    base = cache_group(_cfg(weights_file, modalities=["t2"]))
    assert cache_group(_cfg(weights_file, modalities=["flair"])) != base  # separate-mode volumes: a table each
    assert cache_group(_cfg(weights_file, modalities=["t2"], slices="center:4")) != base
    assert cache_group(_cfg(weights_file, modalities=["t2"], image_size=64)) != base
    assert cache_group(_cfg("none", seed=0)) != cache_group(_cfg("none", seed=1))


@pytest.mark.parametrize("change", [{"dedup": "drop"}, {"dedup": "group"}, {"split_dirs": {"test": "Testing"}}])
def test_settings_that_reshape_the_table_split_the_group(weights_file, change):
    """--dedup group and drop change the table's rows and units; split folders change which images are read."""
    assert cache_group(_cfg(weights_file, **change)) != cache_group(_cfg(weights_file))


def test_the_data_part_of_the_group_is_every_source_setting():
    from medtransfer.config import fields_in
    from medtransfer.study.executors import SOURCE_FIELDS

    assert set(SOURCE_FIELDS) == set(fields_in("Data", "CSV", "Volumes")) >= {"dedup", "split_dirs", "data"}


def _feature_digest(values: dict) -> str:
    """The feature-cache entry a frozen run with these settings reads, computed as the run computes it."""
    from medtransfer.data.load import load_table
    from medtransfer.engine.cache import key_digest
    from medtransfer.fitting import run_feature_key
    from medtransfer.models.backbone import build_backbone

    cfg = parse_config(values)
    backbone = build_backbone(cfg.backbone, cfg.weights, cfg.image_size, cfg.pooling, cfg.seed)
    return key_digest(run_feature_key(cfg, backbone, load_table(cfg), torch.device("cpu")))


@pytest.mark.parametrize(("change", "shared"), [
    ({"head": "mlp", "val_fraction": 0.3}, True),
    ({"image_size": 224}, True),  # the default size, spelled out
    ({"pooling": "avg"}, True),  # a CNN's `auto` pooling, spelled out
    ({"seed": 1}, False),  # `none` weights are drawn from the seed
    ({"image_size": 64}, False),
    ({"data": SYNTH.replace("n=24", "n=30")}, False),
])
def test_runs_grouped_together_read_one_feature_entry_and_others_do_not(change, shared):
    base = {"data": SYNTH, "backbone": "resnet18", "weights": "none", "seed": 0}
    other = {**base, **change}
    grouped = cache_group(parse_config(base)) == cache_group(parse_config(other))
    assert grouped == shared
    assert (_feature_digest(base) == _feature_digest(other)) == shared
