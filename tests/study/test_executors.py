"""Which frozen runs share a feature-cache entry: they wait for one extraction (Ray) and are costed once (dry run)."""

from __future__ import annotations

from medtransfer.config import parse_config
from medtransfer.study.executors import cache_group


def _cfg(**values):
    return parse_config({"data": "/v", "backbone": "resnet18", "weights": "/w.safetensors", **values})


def test_runs_reading_the_same_features_share_a_group():
    base = cache_group(_cfg())
    assert cache_group(_cfg(seed=3)) == base  # a local checkpoint: the seed does not change the features
    assert cache_group(_cfg(val_fraction=0.3, head="mlp")) == base  # the split only picks rows of the same table
    assert cache_group(_cfg(mode="finetune")) is None


def test_anything_that_changes_the_table_or_the_model_splits_the_group():
    base = cache_group(_cfg(modalities=["t2"]))
    assert cache_group(_cfg(modalities=["flair"])) != base  # a separate-mode volume set: one table per modality
    assert cache_group(_cfg(modalities=["t2"], slices="center:4")) != base
    assert cache_group(_cfg(modalities=["t2"], image_size=64)) != base
    assert cache_group(_cfg(weights="none", seed=0)) != cache_group(_cfg(weights="none", seed=1))
