"""The backbone catalog: short names → timm model names, and helpful errors for unknown names."""

from __future__ import annotations

import re

import pytest
import timm

from medtransfer.errors import UserError
from medtransfer.models.catalog import CATALOG, CatalogEntry, resolve

# The official DINOv2 hub names (facebookresearch/dinov2 hubconf) and the ViT size they stand for.
DINOV2_SIZES = {"s": "small", "b": "base", "l": "large", "g": "giant"}


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_catalog_entry_is_a_real_timm_model_with_that_pretrained_tag(name: str) -> None:
    entry = resolve(name)
    assert entry is CATALOG[name]
    assert entry.name == name
    base, _, tag = entry.timm_name.partition(".")
    assert timm.is_model(base), f"{entry.timm_name} is not a timm architecture"
    assert tag, f"{name} should pin a pretrained tag"
    assert entry.timm_name in timm.list_pretrained(base), f"timm has no pretrained weights {entry.timm_name}"
    assert timm.models.get_pretrained_cfg(entry.timm_name) is not None
    assert entry.note


def test_catalog_holds_the_reference_cnns_and_all_dinov2_variants() -> None:
    expected = {"vgg16", "resnet50", "densenet121"}
    expected |= {f"dinov2_vit{size}14{reg}" for size in DINOV2_SIZES for reg in ("", "_reg")}
    assert expected <= set(CATALOG)


def test_dinov2_vits14_maps_to_timm_lvd142m_small() -> None:
    assert resolve("dinov2_vits14").timm_name == "vit_small_patch14_dinov2.lvd142m"
    assert resolve("dinov2_vits14_reg").timm_name == "vit_small_patch14_reg4_dinov2.lvd142m"


@pytest.mark.parametrize("size", sorted(DINOV2_SIZES))
@pytest.mark.parametrize("reg", ["", "_reg"])
def test_dinov2_names_map_to_matching_size_and_register_variant(size: str, reg: str) -> None:
    timm_name = resolve(f"dinov2_vit{size}14{reg}").timm_name
    base, tag = timm_name.split(".")
    assert tag == "lvd142m"
    assert base.startswith(f"vit_{DINOV2_SIZES[size]}_patch14")
    assert base.endswith("_dinov2")
    if reg:
        assert "_reg4_" in base
    else:
        assert "reg" not in base


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "densenet121"])
def test_reference_cnns_use_torchvision_imagenet_weights(name: str) -> None:
    assert resolve(name).timm_name == f"{name}.tv_in1k"


@pytest.mark.parametrize("name", ["resnet10t", "resnet18.a1_in1k", "convnext_atto"])
def test_any_other_timm_name_is_accepted_verbatim(name: str) -> None:
    entry = resolve(name)
    assert isinstance(entry, CatalogEntry)
    assert entry.name == name
    assert entry.timm_name == name


@pytest.mark.parametrize("typo, suggestion", [("resnet5", "resnet50"), ("dinov2_vits16", "dinov2_vits14")])
def test_unknown_name_raises_user_error_suggesting_a_close_name(typo: str, suggestion: str) -> None:
    with pytest.raises(UserError) as info:
        resolve(typo)
    message = str(info.value)
    assert typo in message
    assert "unknown backbone" in message
    hint = message.split("did you mean", 1)
    assert len(hint) == 2, message
    suggested = [s.strip(" ?") for s in hint[1].split(",")]
    assert suggestion in suggested


def test_suggestions_are_not_repeated() -> None:
    # 'resnet50' is both a catalog name and a timm name: it must be offered once
    with pytest.raises(UserError) as info:
        resolve("resnet5")
    hint = str(info.value).split("did you mean", 1)[1]
    suggested = [s.strip(" ?") for s in hint.split(",")]
    assert len(suggested) == len(set(suggested)), f"repeated suggestion in: {str(info.value)!r}"


def test_name_with_nothing_close_still_points_somewhere() -> None:
    with pytest.raises(UserError) as info:
        resolve("qqqqzzzzxxxx")
    message = str(info.value)
    assert "qqqqzzzzxxxx" in message
    assert re.search(r"medtransfer backbones|timm\.list_models", message)
