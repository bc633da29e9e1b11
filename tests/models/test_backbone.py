"""Backbone: pooling per family, input-size checks, preprocessing from timm's config, seeded random weights."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_data_config

from medtransfer.errors import UserError
from medtransfer.models.backbone import Backbone, Preprocess, build_backbone, meta_backbone
from medtransfer.models.families.timm_models import TimmBackbone

VITS = 384  # ViT-S embedding width


def images(size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def timm_data_config(model_id: str) -> dict:
    """What timm itself says the preprocessing of these pretrained weights is."""
    return resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(model_id).to_dict())


@pytest.fixture(scope="module")
def dinov2_28() -> Backbone:
    """dinov2_vits14 at 28 px (2x2 patches), random weights, default pooling."""
    return build_backbone("dinov2_vits14", "none", 28).eval()


@pytest.fixture(scope="module")
def resnet18_32() -> Backbone:
    return build_backbone("resnet18", "none", 32).eval()


# ---------------------------------------------------------------------------------------------------------------
# pooling


def test_vit_auto_pooling_is_cls_mean(dinov2_28) -> None:
    assert dinov2_28.pooling == "cls_mean"
    assert dinov2_28.num_features == 2 * VITS


def test_cnn_auto_pooling_is_avg(resnet18_32) -> None:
    assert resnet18_32.pooling == "avg"
    with torch.no_grad():
        out = resnet18_32(images(32))
    assert out.shape == (2, resnet18_32.num_features) == (2, 512)


@pytest.mark.parametrize("pooling, width", [("cls", VITS), ("mean", VITS), ("cls_mean", 2 * VITS)])
def test_vit_pooling_widths_and_values(dinov2_28, pooling, width) -> None:
    backbone = TimmBackbone(dinov2_28.model, dinov2_28.spec, dinov2_28.preprocess, pooling, "test").eval()
    x = images(28)
    with torch.no_grad():
        out = backbone(x)
        tokens = dinov2_28.model.forward_features(x)
    assert backbone.num_features == width
    assert out.shape == (2, width)
    cls, mean = tokens[:, 0], tokens[:, 1:].mean(dim=1)
    want = {"cls": cls, "mean": mean, "cls_mean": torch.cat([cls, mean], dim=1)}[pooling]
    assert torch.allclose(out, want, rtol=1e-5, atol=1e-6)


def test_build_backbone_passes_pooling_through() -> None:
    backbone = build_backbone("dinov2_vits14", "none", 28, pooling="cls").eval()
    assert backbone.pooling == "cls"
    assert backbone.num_features == VITS
    with torch.no_grad():
        assert backbone(images(28)).shape == (2, VITS)


def test_register_tokens_are_left_out_of_the_patch_mean() -> None:
    backbone = build_backbone("dinov2_vits14_reg", "none", 28, pooling="mean").eval()
    model = backbone.model
    assert model.num_prefix_tokens == 5
    x = images(28)
    with torch.no_grad():
        out = backbone(x)
        tokens = model.forward_features(x)
    assert tokens.shape[1] == 1 + 4 + 2 * 2
    assert torch.allclose(out, tokens[:, 5:].mean(dim=1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out, tokens[:, 1:].mean(dim=1), rtol=1e-3, atol=1e-4)


def test_avg_pooling_on_a_vit_is_a_user_error(dinov2_28) -> None:
    with pytest.raises(UserError) as info:
        TimmBackbone(dinov2_28.model, dinov2_28.spec, dinov2_28.preprocess, "avg", "test")
    assert "avg" in str(info.value)
    assert "cls_mean" in str(info.value)


@pytest.mark.parametrize("pooling", ["cls", "mean", "cls_mean"])
def test_token_pooling_on_a_cnn_is_a_user_error(pooling) -> None:
    with pytest.raises(UserError) as info:
        build_backbone("resnet18", "none", 32, pooling=pooling)
    assert f"--pooling {pooling}" in str(info.value)
    assert "avg" in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# input size


def test_dinov2_image_size_not_a_multiple_of_14_is_a_user_error() -> None:
    with pytest.raises(UserError) as info:
        build_backbone("dinov2_vits14", "none", 30)
    message = str(info.value)
    assert "--image-size 30" in message
    assert "14" in message
    assert "28" in message  # the nearest multiple is suggested


def test_dinov2_builds_its_position_grid_for_the_run_size(dinov2_28) -> None:
    assert tuple(dinov2_28.model.patch_embed.grid_size) == (2, 2)
    assert dinov2_28.model.pos_embed.shape[1] == 1 + 2 * 2
    assert dinov2_28.preprocess.size == 28


# ---------------------------------------------------------------------------------------------------------------
# preprocessing from timm's pretrained config


def test_resnet50_preprocess_is_timms_torchvision_config() -> None:
    backbone = build_backbone("resnet50", "none", 64)
    want = timm_data_config("resnet50.tv_in1k")
    pre = backbone.preprocess
    assert isinstance(pre, Preprocess)
    assert pre.size == 64
    assert pre.interpolation == want["interpolation"] == "bilinear"
    assert pre.crop_pct == pytest.approx(want["crop_pct"]) and pre.crop_pct == pytest.approx(0.875)
    assert pre.mean == pytest.approx(tuple(want["mean"])) and pre.mean == pytest.approx(IMAGENET_DEFAULT_MEAN)
    assert pre.std == pytest.approx(tuple(want["std"])) and pre.std == pytest.approx(IMAGENET_DEFAULT_STD)


def test_dinov2_preprocess_is_timms_dinov2_config(dinov2_28) -> None:
    want = timm_data_config("vit_small_patch14_dinov2.lvd142m")
    pre = dinov2_28.preprocess
    assert pre.interpolation == want["interpolation"] == "bicubic"
    assert pre.crop_pct == pytest.approx(want["crop_pct"]) and pre.crop_pct == pytest.approx(1.0)
    assert pre.mean == pytest.approx(tuple(want["mean"])) and pre.mean == pytest.approx(IMAGENET_DEFAULT_MEAN)
    assert pre.std == pytest.approx(tuple(want["std"]))


def test_preprocess_size_defaults_to_timms_input_size() -> None:
    backbone = build_backbone("resnet18", "none", None)
    assert backbone.preprocess.size == timm_data_config("resnet18.tv_in1k")["input_size"][-1]


def test_preprocess_as_dict_is_plain(resnet18_32) -> None:
    data = resnet18_32.preprocess.as_dict()
    assert data["size"] == 32
    assert isinstance(data["mean"], list) and isinstance(data["std"], list)
    assert data["mean"] == pytest.approx(list(resnet18_32.preprocess.mean))
    assert set(data) == {"size", "mean", "std", "interpolation", "crop_pct"}


# ---------------------------------------------------------------------------------------------------------------
# widths and seeded random weights


def test_vgg16_feature_width_matches_its_output() -> None:
    backbone = build_backbone("vgg16", "none", 32).eval()
    with torch.no_grad():
        out = backbone(images(32, n=1))
    assert out.ndim == 2
    assert backbone.num_features == out.shape[1]


def test_none_weights_are_reproducible_from_the_seed(resnet18_32) -> None:
    same = build_backbone("resnet18", "none", 32, seed=0)
    other = build_backbone("resnet18", "none", 32, seed=1)
    a, b, c = resnet18_32.model.state_dict(), same.model.state_dict(), other.model.state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
    assert not torch.equal(a["layer4.1.conv2.weight"], c["layer4.1.conv2.weight"])


def test_unknown_backbone_is_a_user_error_before_building() -> None:
    with pytest.raises(UserError) as info:
        build_backbone("resnet5", "none", 32)
    assert "resnet50" in str(info.value)


@pytest.mark.parametrize(("name", "size", "pooling"), [
    ("resnet18", 32, "auto"), ("resnet18", None, "avg"), ("dinov2_vits14", 28, "auto"), ("dinov2_vits14", 28, "mean"),
    ("vgg16", 32, "auto"),
])
def test_the_meta_backbone_is_the_built_one_without_values(name, size, pooling) -> None:
    meta, built = meta_backbone(name, size, pooling), build_backbone(name, "none", size, pooling)
    assert all(p.is_meta for p in meta.parameters()) and not any(p.is_meta for p in built.parameters())
    assert (meta.model_id, meta.pooling, meta.num_features) == (built.model_id, built.pooling, built.num_features)
    assert meta.preprocess == built.preprocess
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [(n, p.shape) for n, p in built.named_parameters()]


def test_the_meta_backbone_refuses_what_build_refuses() -> None:
    for args in (("resnet18", 32, "cls"), ("dinov2_vits14", 30, "auto"), ("dinov2_vits14", 28, "avg")):
        with pytest.raises(UserError) as meta:
            meta_backbone(*args)
        with pytest.raises(UserError) as built:
            build_backbone(args[0], "none", args[1], args[2])
        assert meta.value.line() == built.value.line()
