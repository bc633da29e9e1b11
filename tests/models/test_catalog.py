"""The backbone catalog: short names → a family and model, family prefixes, the published cards' facts, and
helpful errors for unknown names."""

from __future__ import annotations

import re

import pytest
import timm

from medtransfer.errors import UserError
from medtransfer.models.backbone import meta_backbone
from medtransfer.models.catalog import CATALOG, BackboneSpec, resolve

# The official DINOv2 hub names (facebookresearch/dinov2 hubconf) and the ViT size they stand for.
DINOV2_SIZES = {"s": "small", "b": "base", "l": "large", "g": "giant"}


TIMM_REGISTRY = sorted(name for name, entry in CATALOG.items()
                       if entry.family == "timm" and not entry.model_id.startswith("hf-hub:") and not entry.weights_file)


@pytest.mark.parametrize("name", TIMM_REGISTRY)
def test_every_timm_catalog_entry_is_a_real_timm_model_with_that_pretrained_tag(name: str) -> None:
    spec = resolve(name)
    entry = spec.entry
    assert entry is CATALOG[name]
    assert spec.name == name and spec.family == "timm" and spec.model_id == entry.model_id
    base, _, tag = entry.model_id.partition(".")
    assert timm.is_model(base), f"{entry.model_id} is not a timm architecture"
    assert tag, f"{name} should pin a pretrained tag"
    assert entry.model_id in timm.list_pretrained(base), f"timm has no pretrained weights {entry.model_id}"
    assert timm.models.get_pretrained_cfg(entry.model_id) is not None
    assert entry.note and entry.licence


def test_catalog_holds_the_reference_cnns_and_all_dinov2_variants() -> None:
    expected = {"vgg16", "resnet50", "densenet121"}
    expected |= {f"dinov2_vit{size}14{reg}" for size in DINOV2_SIZES for reg in ("", "_reg")}
    assert expected <= set(CATALOG)


def test_dinov2_vits14_maps_to_timm_lvd142m_small() -> None:
    assert resolve("dinov2_vits14").model_id == "vit_small_patch14_dinov2.lvd142m"
    assert resolve("dinov2_vits14_reg").model_id == "vit_small_patch14_reg4_dinov2.lvd142m"


@pytest.mark.parametrize("size", sorted(DINOV2_SIZES))
@pytest.mark.parametrize("reg", ["", "_reg"])
def test_dinov2_names_map_to_matching_size_and_register_variant(size: str, reg: str) -> None:
    model_id = resolve(f"dinov2_vit{size}14{reg}").model_id
    base, tag = model_id.split(".")
    assert tag == "lvd142m"
    assert base.startswith(f"vit_{DINOV2_SIZES[size]}_patch14")
    assert base.endswith("_dinov2")
    if reg:
        assert "_reg4_" in base
    else:
        assert "reg" not in base


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "densenet121"])
def test_reference_cnns_use_torchvision_imagenet_weights(name: str) -> None:
    assert resolve(name).model_id == f"{name}.tv_in1k"


@pytest.mark.parametrize("name", ["resnet10t", "resnet18.a1_in1k", "convnext_atto"])
def test_any_other_timm_name_is_accepted_verbatim(name: str) -> None:
    spec = resolve(name)
    assert isinstance(spec, BackboneSpec)
    assert (spec.name, spec.family, spec.model_id, spec.entry) == (name, "timm", name, None)


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


@pytest.mark.parametrize("name, family, model_id, revision", [
    ("hf:microsoft/rad-dino", "transformers", "microsoft/rad-dino", None),
    ("hf:org/model@v1.0", "transformers", "org/model", "v1.0"),
    ("hf:/data/models/my@dino", "transformers", "/data/models/my@dino", None),  # a folder keeps its @
    ("hf:./local", "transformers", "./local", None),
    ("open_clip:ViT-B-32@laion2b_s34b_b79k", "open_clip", "ViT-B-32", "laion2b_s34b_b79k"),
    ("open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", "open_clip",
     "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", None),
    ("hf-hub:MahmoodLab/UNI", "timm", "hf-hub:MahmoodLab/UNI", None),
    ("hf-hub:org/name@0123abc", "timm", "hf-hub:org/name", "0123abc"),
])
def test_family_prefixes_name_the_family_model_and_revision(name, family, model_id, revision) -> None:
    spec = resolve(name)
    assert (spec.name, spec.family, spec.model_id, spec.revision, spec.entry) == (name, family, model_id, revision,
                                                                                  None)


@pytest.mark.parametrize("name", ["hf:", "open_clip:", "open_clip:hf-hub:", "hf-hub:"])
def test_a_prefix_with_no_model_is_a_user_error(name) -> None:
    with pytest.raises(UserError, match="names no model"):
        resolve(name)


# The published model cards: architecture and embedding width (with the card's pooling).
CARDS = {
    "dinov3_vits16": ("vit_small_patch16_dinov3", 384), "dinov3_vitb16": ("vit_base_patch16_dinov3", 768),
    "dinov3_vitl16": ("vit_large_patch16_dinov3", 1024), "dinov3_convnext_tiny": ("convnext_tiny", 768),
    "uni": ("vit_large_patch16_224", 1024), "virchow2": ("vit_huge_patch14_224", 2560),
    "retfound": ("vit_large_patch16_224", 1024), "rad_dino": ("Dinov2Model", 768),
    "medsiglip": ("SiglipVisionModel", 1152), "biomedclip": ("vit_base_patch16_224", 512),
}


def _architecture(backbone) -> str:
    """What the backbone is: the timm architecture (a CLIP tower's trunk too) or the transformers class."""
    model = getattr(backbone.model, "trunk", backbone.model)
    cfg = getattr(model, "pretrained_cfg", None)
    return cfg["architecture"] if cfg else type(model).__name__


@pytest.mark.parametrize("name", sorted(CARDS))
def test_foundation_entries_resolve_on_meta_to_the_published_architecture_and_width(name, tmp_path,
                                                                                     monkeypatch) -> None:
    """Built on the meta device from the catalog alone: an empty, offline Hugging Face cache."""
    from fake_hub import offline_hub

    offline_hub(tmp_path, monkeypatch)
    meta_backbone.cache_clear()
    backbone = meta_backbone(name, None)
    entry = CATALOG[name]
    assert (_architecture(backbone), backbone.num_features) == CARDS[name]
    assert backbone.num_features == entry.width and backbone.pooling == entry.pooling
    assert entry.licence and entry.note
    assert next(backbone.parameters()).is_meta
    meta_backbone.cache_clear()


def test_gated_flags_follow_the_hub() -> None:
    gated = {name for name, entry in CATALOG.items() if entry.gated}
    assert {"medsiglip", "uni", "virchow2", "retfound"} <= gated
    assert not {"rad_dino", "biomedclip", "resnet50", "dinov2_vits14"} & gated
