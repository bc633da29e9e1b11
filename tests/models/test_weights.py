"""Weight sources: local checkpoints in timm / torchvision / official DINOv2 layout, strict loading, offline imagenet.

No network here: every checkpoint is made by the test from a randomly initialised model, and the features the
loaded backbone gives are compared with those of the model the checkpoint came from.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from fake_hub import offline_hub

from medtransfer.errors import UserError
from medtransfer.models import hub
from medtransfer.models.backbone import available_offline, build_backbone, weights_identity
from medtransfer.models.weights import (
    check_weights_arg,
    load_checkpoint,
    load_run_weights,
    read_state_dict,
)

TIGHT = {"rtol": 1e-5, "atol": 1e-6}


# ---------------------------------------------------------------------------------------------------------------
# helpers


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Perturb every parameter and BatchNorm statistic, so a key loaded into the wrong place changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(1234)
    return model.eval()


def images(size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def vit_reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """DINOv2 linear-probe features: class token ⊕ mean of the patch tokens (registers skipped)."""
    with torch.no_grad():
        tokens = model.forward_features(x)
    return torch.cat([tokens[:, 0], tokens[:, model.num_prefix_tokens:].mean(dim=1)], dim=1)


def to_official_dinov2(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Invert timm's _convert_dinov2: timm DINOv2 state dict → facebookresearch/dinov2 key layout."""
    state = {k: v.clone() for k, v in state.items()}
    embed_dim = state["cls_token"].shape[-1]
    out: dict[str, torch.Tensor] = {}
    if "reg_token" in state:
        # official: pos_embed covers the class position, cls_token has no position folded in, registers unembedded
        gen = torch.Generator().manual_seed(seed)
        cls_pos = torch.randn(1, 1, embed_dim, generator=gen) * 0.1
        out["register_tokens"] = state.pop("reg_token")
        out["cls_token"] = state.pop("cls_token") - cls_pos
        out["pos_embed"] = torch.cat([cls_pos, state.pop("pos_embed")], dim=1)
    out.update(state)
    out["mask_token"] = torch.zeros(1, embed_dim)
    return out


def official_dinov2_keys(depth: int, registers: bool) -> set[str]:
    keys = {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias",
            "norm.weight", "norm.bias"}
    if registers:
        keys.add("register_tokens")
    for i in range(depth):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{i}.{part}.weight", f"blocks.{i}.{part}.bias"}
        keys |= {f"blocks.{i}.ls1.gamma", f"blocks.{i}.ls2.gamma"}
    return keys


def params_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"partially loaded: {changed[:5]}"


# ---------------------------------------------------------------------------------------------------------------
# official DINOv2 layout


@pytest.fixture(scope="module")
def dinov2_s14_518(tmp_path_factory) -> tuple[nn.Module, Path]:
    """A random ViT-S/14 DINOv2 at its native 518 px, saved in the official facebookresearch layout."""
    model = randomise(timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0), seed=1)
    assert model.patch_embed.grid_size == (37, 37)
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_vits14_pretrain.pth"
    torch.save(to_official_dinov2(model.state_dict()), path)
    return model, path


def test_official_dinov2_checkpoint_loads_with_identical_outputs_at_native_size(dinov2_s14_518) -> None:
    source, path = dinov2_s14_518
    saved = torch.load(path, weights_only=True)
    assert set(saved) == official_dinov2_keys(depth=12, registers=False)  # really the official layout
    assert saved["mask_token"].shape == (1, 384)

    backbone = build_backbone("dinov2_vits14", str(path), 518, pooling="cls_mean").eval()
    assert backbone.model_id == "vit_small_patch14_dinov2.lvd142m"
    # 518 px is the checkpoint's own grid: nothing may be resampled
    assert torch.equal(backbone.model.pos_embed, source.pos_embed)
    x = images(518, n=1, seed=3)
    with torch.no_grad():
        got = backbone(x)
    want = vit_reference(source, x)
    assert got.shape == (1, 2 * 384)
    assert torch.allclose(got, want, **TIGHT), (got - want).abs().max()


def test_official_dinov2_checkpoint_at_518_resamples_into_a_smaller_model(dinov2_s14_518) -> None:
    source, path = dinov2_s14_518
    backbone = build_backbone("dinov2_vits14", str(path), 56, pooling="cls_mean").eval()
    model = backbone.model
    assert model.pos_embed.shape == (1, 1 + 4 * 4, 384)
    # the class position is carried over unchanged; everything but pos_embed is loaded as saved
    assert torch.allclose(model.pos_embed[:, 0], source.pos_embed[:, 0], **TIGHT)
    src_state = source.state_dict()
    for key, value in model.state_dict().items():
        if key != "pos_embed":
            assert torch.equal(value, src_state[key]), key
    with torch.no_grad():
        out = backbone(images(56, n=1))
    assert out.shape == (1, 768) and torch.isfinite(out).all()


def test_official_dinov2_register_checkpoint_loads_with_identical_outputs(tmp_path) -> None:
    size = 56  # saved and loaded on the same 4x4 grid: no resampling
    source = randomise(timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0,
                                         img_size=size), seed=2)
    official = to_official_dinov2(source.state_dict(), seed=5)
    assert set(official) == official_dinov2_keys(depth=12, registers=True)
    assert official["pos_embed"].shape[1] == (size // 14) ** 2 + 1  # official keeps the class position
    assert official["register_tokens"].shape == (1, 4, 384)
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(official, path)

    backbone = build_backbone("dinov2_vits14_reg", str(path), size, pooling="cls_mean").eval()
    assert backbone.model_id == "vit_small_patch14_reg4_dinov2.lvd142m"
    assert backbone.model.num_prefix_tokens == 5
    assert torch.equal(backbone.model.pos_embed, source.pos_embed)
    x = images(size, seed=4)
    with torch.no_grad():
        got = backbone(x)
    want = vit_reference(source, x)
    assert got.shape == (2, 768)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got - want).abs().max()
    # the register variant folds the class position into cls_token exactly as the official model adds it
    assert torch.allclose(backbone.model.cls_token, source.cls_token, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# timm and torchvision CNN layouts


def test_timm_resnet18_safetensors_with_classifier_loads_identically(tmp_path) -> None:
    source = randomise(timm.create_model("resnet18", pretrained=False), seed=7)
    assert "fc.weight" in source.state_dict()
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))

    backbone = build_backbone("resnet18", str(path), 32).eval()
    x = images(32)
    with torch.no_grad():
        got = backbone(x)
        want = source.forward_head(source.forward_features(x), pre_logits=True)
    assert got.shape == (2, 512)
    assert torch.allclose(got, want, **TIGHT)


def assert_torchvision_file_loads(tmp_path, name: str, source: nn.Module, state: dict, filename: str) -> None:
    """Save `state` as a .pth, load it into our backbone `name`, and compare with the source's pooled features."""
    path = tmp_path / filename
    torch.save(state, path)
    setattr(source, "classifier" if hasattr(source, "classifier") else "fc", nn.Identity())
    backbone = build_backbone(name, str(path), 32).eval()
    x = images(32)
    with torch.no_grad():
        got, want = backbone(x), source(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, **TIGHT)


def test_torchvision_resnet18_pth_loads_identically(tmp_path) -> None:
    source = randomise(torchvision.models.resnet18(weights=None), seed=8)
    assert_torchvision_file_loads(tmp_path, "resnet18", source, source.state_dict(), "resnet18-tv.pth")


def test_torchvision_checkpoint_without_num_batches_tracked_loads(tmp_path) -> None:
    """torchvision's published ImageNet files predate the num_batches_tracked buffer (torch's own strict
    load_state_dict accepts them); it does not affect eval-mode features, so it must not be a 'missing key'."""
    source = randomise(torchvision.models.resnet18(weights=None), seed=9)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert_torchvision_file_loads(tmp_path, "resnet18", source, state, "resnet18-legacy.pth")


def test_torchvision_densenet121_state_dict_loads_identically(tmp_path) -> None:
    source = randomise(torchvision.models.densenet121(weights=None), seed=10)
    assert source.classifier.in_features == 1024
    assert_torchvision_file_loads(tmp_path, "densenet121", source, source.state_dict(), "densenet121-tv.pth")


LEGACY_DENSENET = re.compile(r"^(.*denselayer\d+\.(?:norm|conv))([12])\.(weight|bias|running_mean|running_var)$")


def _legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old torchvision DenseNet names: denselayerN.norm.1.weight instead of denselayerN.norm1.weight."""
    return {LEGACY_DENSENET.sub(r"\1.\2.\3", k): v for k, v in state.items()}


def test_legacy_densenet_key_names_are_translated(tmp_path) -> None:
    source = randomise(torchvision.models.densenet121(weights=None), seed=11)
    state = _legacy_densenet_keys(source.state_dict())
    assert "features.denseblock1.denselayer1.norm.1.weight" in state
    assert "features.denseblock1.denselayer1.norm1.weight" not in state
    assert_torchvision_file_loads(tmp_path, "densenet121", source, state, "densenet121-legacy-names.pth")


def test_published_torchvision_densenet121_layout_loads(tmp_path) -> None:
    """As in torchvision's densenet121 ImageNet file: legacy names and no num_batches_tracked buffers."""
    source = randomise(torchvision.models.densenet121(weights=None), seed=12)
    state = {k: v for k, v in _legacy_densenet_keys(source.state_dict()).items()
             if not k.endswith("num_batches_tracked")}
    assert_torchvision_file_loads(tmp_path, "densenet121", source, state, "densenet121-a639ec97.pth")


def test_training_container_and_ddp_prefix_are_unwrapped(tmp_path) -> None:
    source = randomise(timm.create_model("resnet18", pretrained=False, num_classes=0), seed=13)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)

    backbone = build_backbone("resnet18", str(path), 32).eval()
    x = images(32)
    with torch.no_grad():
        assert torch.allclose(backbone(x), source(x), **TIGHT)


# ---------------------------------------------------------------------------------------------------------------
# mismatches never load partially


@pytest.fixture()
def resnet18_target() -> nn.Module:
    return timm.create_model("resnet18", pretrained=False, num_classes=0)


def test_other_architecture_is_rejected_naming_keys_and_nothing_is_loaded(tmp_path, resnet18_target) -> None:
    other = timm.create_model("resnet34", pretrained=False, num_classes=0).state_dict()
    path = tmp_path / "resnet34.pth"
    torch.save(other, path)
    extra = set(other) - set(resnet18_target.state_dict())
    assert extra

    before = params_snapshot(resnet18_target)
    with pytest.raises(UserError) as info:
        load_checkpoint(resnet18_target, path, "fc")
    message = str(info.value)
    assert str(path) in message
    assert any(key in message for key in extra), message
    assert_state_unchanged(resnet18_target, before)

    with pytest.raises(UserError) as info:
        build_backbone("resnet18", str(path), 32)
    assert any(key in str(info.value) for key in extra)


def test_wrong_shape_is_rejected_naming_the_key_and_nothing_is_loaded(tmp_path, resnet18_target) -> None:
    state = randomise(timm.create_model("resnet18", pretrained=False, num_classes=0), seed=14).state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    path = tmp_path / "bad-shape.pth"
    torch.save(state, path)

    before = params_snapshot(resnet18_target)
    with pytest.raises(UserError) as info:
        load_checkpoint(resnet18_target, path, "fc")
    assert "layer2.0.conv1.weight" in str(info.value)
    assert "shape" in str(info.value)
    assert_state_unchanged(resnet18_target, before)


def test_missing_keys_are_rejected_by_name_and_nothing_is_loaded(tmp_path, resnet18_target) -> None:
    state = randomise(timm.create_model("resnet18", pretrained=False, num_classes=0), seed=15).state_dict()
    del state["layer4.1.conv2.weight"]
    del state["layer3.0.bn1.bias"]
    path = tmp_path / "missing.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))

    before = params_snapshot(resnet18_target)
    with pytest.raises(UserError) as info:
        load_checkpoint(resnet18_target, path, "fc")
    message = str(info.value)
    assert "missing" in message
    assert "layer4.1.conv2.weight" in message and "layer3.0.bn1.bias" in message
    assert_state_unchanged(resnet18_target, before)


def test_vit_checkpoint_with_a_wrong_block_shape_is_rejected(tmp_path, dinov2_s14_518) -> None:
    state = torch.load(dinov2_s14_518[1], weights_only=True)
    state["blocks.3.mlp.fc1.weight"] = state["blocks.3.mlp.fc1.weight"][:100]
    path = tmp_path / "dinov2_bad.pth"
    torch.save(state, path)
    with pytest.raises(UserError) as info:
        build_backbone("dinov2_vits14", str(path), 28)
    assert "blocks.3.mlp.fc1.weight" in str(info.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_garbage_file_is_a_user_error(tmp_path, suffix) -> None:
    path = tmp_path / f"x{suffix}"
    path.write_bytes(os.urandom(64) + b"not a checkpoint")
    with pytest.raises(UserError) as info:
        read_state_dict(path)
    assert str(path) in str(info.value)
    with pytest.raises(UserError):
        build_backbone("resnet18", str(path), 32)


def test_pickled_objects_are_refused(tmp_path) -> None:
    state = timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict()
    path = tmp_path / "objects.pth"
    torch.save({**state, "extra": object()}, path)
    with pytest.raises(UserError) as info:
        read_state_dict(path)
    assert "not unpickled" in str(info.value) and "state_dict" in str(info.value)  # refused while unpickling


class _Payload:
    """Unpickling this would run os.mkdir(target): weights_only loading must refuse it instead."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def test_pickle_payload_is_never_executed(tmp_path) -> None:
    sentinel = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(sentinel)}, path)
    with pytest.raises(UserError, match="can run code"):
        read_state_dict(path)
    with pytest.raises(UserError):
        build_backbone("resnet18", str(path), 32)
    assert not sentinel.exists()


def test_non_state_dict_content_is_a_user_error(tmp_path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(UserError) as info:
        read_state_dict(path)
    assert "state dict" in str(info.value)


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.int8])
def test_non_float_weights_are_refused_not_cast(tmp_path, resnet18_target, dtype) -> None:
    """load_state_dict would copy int32 or bool values into the float parameters without a word."""
    state = timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict()
    state["layer1.0.conv1.weight"] = torch.ones_like(state["layer1.0.conv1.weight"]).to(dtype)
    path = tmp_path / "cast.pth"
    torch.save(state, path)
    before = params_snapshot(resnet18_target)
    with pytest.raises(UserError) as info:
        load_checkpoint(resnet18_target, path, "fc")
    line = info.value.line()
    assert str(dtype).removeprefix("torch.") in line and "layer1.0.conv1.weight" in line and "float" in line
    assert_state_unchanged(resnet18_target, before)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_infinite_weights_are_refused_with_the_count(tmp_path, resnet18_target, bad) -> None:
    state = timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict()
    state["layer2.1.bn2.weight"][:3] = bad
    path = tmp_path / "diverged.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    before = params_snapshot(resnet18_target)
    with pytest.raises(UserError) as info:
        load_checkpoint(resnet18_target, path, "fc")
    assert "3 NaN or infinite value(s) in 1 tensor(s) (first: layer2.1.bn2.weight)" in info.value.line()
    assert_state_unchanged(resnet18_target, before)


def test_half_precision_weights_load_as_float(tmp_path, resnet18_target) -> None:
    state = randomise(timm.create_model("resnet18", pretrained=False, num_classes=0), seed=3).state_dict()
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    load_checkpoint(resnet18_target, path, "fc")
    loaded = resnet18_target.state_dict()["layer3.0.conv1.weight"]
    assert loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, state["layer3.0.conv1.weight"].half().float())


def test_a_checkpoint_with_no_matching_key_says_so(tmp_path, resnet18_target) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"encoder.layers.0.w": torch.zeros(2), "decoder.w": torch.zeros(2)}, str(path))
    with pytest.raises(UserError) as info:
        load_checkpoint(resnet18_target, path, "fc")
    assert "none of its 2 keys match" in info.value.line() and "encoder.layers.0.w" in info.value.line()


def test_an_empty_state_dict_is_refused(tmp_path) -> None:
    path = tmp_path / "empty.pth"
    torch.save({}, path)
    with pytest.raises(UserError, match="no tensors"):
        read_state_dict(path)


def test_run_weights_load_exactly_and_refuse_missing_mismatched_or_nan_files(tmp_path) -> None:
    source, target = nn.Linear(4, 3), nn.Linear(4, 3)
    path = tmp_path / "head.safetensors"
    save_file(source.state_dict(), str(path))
    load_run_weights(target, path)
    torch.testing.assert_close(target.weight, source.weight)
    with pytest.raises(UserError, match="is missing from the run directory"):
        load_run_weights(target, tmp_path / "absent.safetensors")
    with pytest.raises(UserError, match="does not fit the run's model.*shape mismatch"):
        load_run_weights(nn.Linear(5, 3), path)
    nan = {"weight": torch.full((3, 4), float("nan")), "bias": torch.zeros(3)}
    save_file(nan, str(path))
    with pytest.raises(UserError, match="12 NaN"):
        load_run_weights(target, path)
    torch.testing.assert_close(target.weight, source.weight)  # nothing loaded


# ---------------------------------------------------------------------------------------------------------------
# the --weights argument and its identity


def test_check_weights_arg(tmp_path) -> None:
    check_weights_arg("pretrained")
    check_weights_arg("imagenet")
    check_weights_arg("none")
    good = tmp_path / "w.safetensors"
    good.write_bytes(b"x")
    check_weights_arg(str(good))
    with pytest.raises(UserError) as info:
        check_weights_arg(str(tmp_path / "w.txt"))
    assert "w.txt" in str(info.value)
    with pytest.raises(UserError) as info:
        check_weights_arg(str(tmp_path / "absent.pth"))
    assert "does not exist" in str(info.value)


def test_weights_identity_follows_file_content_and_seed(tmp_path) -> None:
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(b"one")
    b.write_bytes(b"one")
    assert weights_identity("resnet18", str(a), 0) == weights_identity("resnet18", str(b), 5)
    b.write_bytes(b"two")
    assert weights_identity("resnet18", str(a), 0) != weights_identity("resnet18", str(b), 0)
    assert weights_identity("resnet18", "none", 0) != weights_identity("resnet18", "none", 1)
    assert weights_identity("resnet18.tv_in1k", "imagenet", 0) != weights_identity("resnet50.tv_in1k", "imagenet", 0)
    # `imagenet` is timm's older name for the pretrained weights: one identity, so one feature cache
    assert weights_identity("resnet18", "imagenet", 0) == weights_identity("resnet18", "pretrained", 0)


# ---------------------------------------------------------------------------------------------------------------
# imagenet weights without network


@pytest.fixture()
def empty_offline_hub(tmp_path, monkeypatch) -> Path:
    """HF_HUB_OFFLINE=1 and an empty HF_HOME (huggingface_hub's constants patched too)."""
    return offline_hub(tmp_path, monkeypatch).parent


def test_offline_imagenet_without_cache_fails_fast_with_both_fixes(empty_offline_hub) -> None:
    assert not available_offline("resnet18.tv_in1k")
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        build_backbone("resnet18", "imagenet", 32)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "resnet18.tv_in1k" in message
    assert "--weights PATH" in message
    assert "HF_HOME" in message and "HF_HUB_OFFLINE" in message
    assert elapsed < 20, f"took {elapsed:.1f} s"


def test_offline_imagenet_loads_from_a_populated_cache(empty_offline_hub) -> None:
    """The second fix works: timm's file placed in the HF cache under HF_HOME loads without network."""
    source = randomise(timm.create_model("resnet18", pretrained=False), seed=16)
    repo = empty_offline_hub / "hub" / "models--timm--resnet18.tv_in1k"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(snapshot / "model.safetensors"))
    assert available_offline("resnet18.tv_in1k")

    backbone = build_backbone("resnet18", "imagenet", 32).eval()
    assert backbone.weights_id == f"hub:timm/resnet18.tv_in1k@{revision}"
    assert any(revision in note for note in backbone.notes)
    x = images(32)
    with torch.no_grad():
        got = backbone(x)
        want = source.forward_head(source.forward_features(x), pre_logits=True)
    assert torch.allclose(got, want, **TIGHT)


@pytest.mark.parametrize("value", ["FALSE", "off"])
def test_hf_hub_offline_false_spellings_do_not_block_downloads(monkeypatch, tmp_path, value) -> None:
    """huggingface_hub treats only 1/ON/YES/TRUE as offline; other values must reach the download attempt."""
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    calls = []

    def fake_download(repo_id, filename, revision=None):
        calls.append((repo_id, filename))
        raise OSError("no network in this test")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert not hub.offline()
    with pytest.raises(UserError) as info:
        build_backbone("resnet18", "pretrained", 32)
    assert calls == [("timm/resnet18.tv_in1k", "model.safetensors")]
    assert "OSError" in str(info.value)
