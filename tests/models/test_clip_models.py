"""The open_clip family: tiny CLIP models in open_clip's hub layout, compared with open_clip's own create_model and
encode_image; strict loading of the image tower, identities, the meta build of BiomedCLIP, freezing and LoRA."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import open_clip
import pytest
import torch

from medtransfer.errors import UserError
from medtransfer.models import adapt
from medtransfer.models.backbone import build_backbone, meta_backbone, weights_identity
from fake_hub import COMMIT_A, COMMIT_B, offline_hub, put_snapshot
from family_checks import breast, check_every_mode

TEXT_CFG = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
VIT_CFG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                                           "head_width": 16}, "text_cfg": TEXT_CFG}
# BiomedCLIP's tower shape: a timm ViT trunk (timm's tiny test_vit, 160 px, width 64) and a linear projection.
TIMM_CFG = {"embed_dim": 16, "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False,
                                            "timm_pool": "", "timm_proj": "linear", "image_size": 160},
            "text_cfg": TEXT_CFG}
PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bilinear",
              "resize_mode": "shortest"}
VIT_REPO, TIMM_REPO = "org/tiny-clip", "org/tiny-timm-clip"


def images(size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def hub_files(folder: Path, model_cfg: dict, seed: int = 0) -> dict[str, Path]:
    """A random CLIP made by open_clip from the config, saved in its hub layout (config + full state dict)."""
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": PREPROCESS}))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}")  # no weights in the folder: open_clip's random init
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return {name: folder / name for name in ("open_clip_config.json", "open_clip_pytorch_model.bin")}


@pytest.fixture(scope="module")
def vit_files(tmp_path_factory) -> dict[str, Path]:
    return hub_files(tmp_path_factory.mktemp("vit") / "a", VIT_CFG)


@pytest.fixture(scope="module")
def timm_files(tmp_path_factory) -> dict[str, Path]:
    return hub_files(tmp_path_factory.mktemp("timm") / "a", TIMM_CFG)


@pytest.fixture
def vit_hub(tmp_path, monkeypatch, vit_files) -> Path:
    """An offline cache holding the tiny ViT CLIP at COMMIT_A."""
    cache = offline_hub(tmp_path, monkeypatch)
    put_snapshot(cache, VIT_REPO, vit_files)
    return cache


def open_clip_model(repo: str, size: int | None = None) -> torch.nn.Module:
    """open_clip's own model from the hub cache (config, weights and, for another size, its own resizing)."""
    return open_clip.create_model(f"hf-hub:{repo}", force_image_size=size).eval()


# ---------------------------------------------------------------------------------------------------------------
# VisionTransformer tower


def test_vit_proj_is_open_clips_encode_image(vit_hub) -> None:
    backbone = build_backbone(f"open_clip:hf-hub:{VIT_REPO}", "pretrained", 32, "auto").eval()
    x = images(32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), open_clip_model(VIT_REPO).encode_image(x), rtol=1e-5, atol=1e-6)
    assert backbone.pooling == "proj" and backbone.num_features == 16
    assert backbone.weights_id == f"hub:{VIT_REPO}@{COMMIT_A}"
    assert any("left out" in note and "text-tower" in note for note in backbone.notes)
    assert not any(name.startswith(("transformer.", "token_embedding")) for name in backbone.state_dict()
                   if not name.startswith("model."))  # the text tower is never built
    pre = backbone.preprocess
    assert (pre.size, list(pre.mean), list(pre.std), pre.interpolation, pre.crop_pct) == (
        32, PREPROCESS["mean"], PREPROCESS["std"], "bilinear", 1.0)


def test_vit_pre_proj_is_the_pooled_token_before_the_projection(vit_hub) -> None:
    backbone = build_backbone(f"open_clip:hf-hub:{VIT_REPO}", "pretrained", 32, "pre_proj").eval()
    reference = open_clip_model(VIT_REPO)
    reference.visual.proj = None  # open_clip's forward without the projection (as prune_intermediate_layers does)
    x = images(32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), reference.encode_image(x), rtol=1e-5, atol=1e-6)
    assert backbone.num_features == 32


def test_vit_at_another_size_matches_open_clips_force_image_size(vit_hub) -> None:
    backbone = build_backbone(f"open_clip:hf-hub:{VIT_REPO}", "pretrained", 64, "proj").eval()
    x = images(64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), open_clip_model(VIT_REPO, 64).encode_image(x), rtol=1e-5, atol=1e-6)
    assert backbone.preprocess.size == 64
    with pytest.raises(UserError, match="patch size 8"):
        build_backbone(f"open_clip:hf-hub:{VIT_REPO}", "pretrained", 60)


# ---------------------------------------------------------------------------------------------------------------
# TimmModel tower (BiomedCLIP's)


def test_timm_tower_matches_open_clip(tmp_path, monkeypatch, timm_files) -> None:
    cache = offline_hub(tmp_path, monkeypatch)
    put_snapshot(cache, TIMM_REPO, timm_files)
    x = images(32)
    reference = open_clip_model(TIMM_REPO, 32)
    proj = build_backbone(f"open_clip:hf-hub:{TIMM_REPO}", "pretrained", 32, "proj").eval()
    pre = build_backbone(f"open_clip:hf-hub:{TIMM_REPO}", "pretrained", 32, "pre_proj").eval()
    with torch.no_grad():
        torch.testing.assert_close(proj(x), reference.encode_image(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pre(x), reference.visual.trunk(x), rtol=1e-5, atol=1e-6)
    assert (proj.num_features, pre.num_features) == (16, 64)
    groups = proj.block_groups()
    assert len(groups.blocks) == len(proj.model.trunk.blocks)
    assert "trunk.patch_embed.proj.weight" in groups.stem and "head.proj.weight" in groups.tail
    assert "trunk.blocks.0.attn.qkv" in proj.lora_targets() and "trunk.blocks.0.attn.proj" in proj.lora_targets()


def test_timm_tower_lora_and_freeze(tmp_path, monkeypatch, timm_files) -> None:
    cache = offline_hub(tmp_path, monkeypatch)
    put_snapshot(cache, TIMM_REPO, timm_files)
    backbone = build_backbone(f"open_clip:hf-hub:{TIMM_REPO}", "pretrained", 32)
    keys = set(backbone.model.state_dict())
    assert adapt.add_lora(backbone, 2) > 0
    backbone(images(32)).sum().backward()
    adapt.merge_lora(backbone)
    assert set(backbone.model.state_dict()) == keys


# ---------------------------------------------------------------------------------------------------------------
# weights: identity, strictness, files, none, meta


def test_identity_follows_the_cached_commit(tmp_path, monkeypatch, vit_files) -> None:
    cache = offline_hub(tmp_path, monkeypatch)
    name = f"open_clip:hf-hub:{VIT_REPO}"
    put_snapshot(cache, VIT_REPO, vit_files, COMMIT_A)
    first = weights_identity(name, "pretrained", 0)
    put_snapshot(cache, VIT_REPO, vit_files, COMMIT_B)  # main now points at a second commit
    second = weights_identity(name, "pretrained", 0)
    assert (first, second) == (f"hub:{VIT_REPO}@{COMMIT_A}", f"hub:{VIT_REPO}@{COMMIT_B}")
    assert build_backbone(name, "pretrained", 32).weights_id == second


def _edited(folder: Path, files: dict[str, Path], edit) -> dict[str, Path]:
    state = torch.load(files["open_clip_pytorch_model.bin"], weights_only=True)
    edit(state)
    folder.mkdir()
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    return {**files, "open_clip_pytorch_model.bin": folder / "open_clip_pytorch_model.bin"}


def test_a_missing_visual_key_is_refused_by_name(tmp_path, monkeypatch, vit_files) -> None:
    cache = offline_hub(tmp_path, monkeypatch)
    put_snapshot(cache, VIT_REPO, _edited(tmp_path / "e", vit_files, lambda s: s.pop("visual.ln_post.weight")))
    with pytest.raises(UserError, match=r"missing keys \(1\): ln_post\.weight"):
        build_backbone(f"open_clip:hf-hub:{VIT_REPO}", "pretrained", 32)


def test_a_key_of_neither_tower_is_refused(tmp_path, monkeypatch, vit_files) -> None:
    cache = offline_hub(tmp_path, monkeypatch)
    put_snapshot(cache, VIT_REPO, _edited(tmp_path / "e", vit_files,
                                          lambda s: s.update({"decoder.weight": torch.zeros(2)})))
    with pytest.raises(UserError, match="decoder.weight"):
        build_backbone(f"open_clip:hf-hub:{VIT_REPO}", "pretrained", 32)


def test_checkpoint_files_full_or_tower_only(vit_hub, vit_files, tmp_path) -> None:
    name = f"open_clip:hf-hub:{VIT_REPO}"
    hub_model = build_backbone(name, "pretrained", 32).eval()
    full = vit_files["open_clip_pytorch_model.bin"]
    state = torch.load(full, weights_only=True)
    tower = tmp_path / "tower.pth"
    torch.save({"state_dict": {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}},
               tower)
    x = images(32)
    for path in (full, tower):
        backbone = build_backbone(name, str(path), 32).eval()
        with torch.no_grad():
            torch.testing.assert_close(backbone(x), hub_model(x), rtol=0, atol=0)
        assert backbone.weights_id.startswith("file:") and backbone.weights_id == weights_identity(name, str(path), 0)
    assert any("'state_dict'" in note for note in backbone.notes)


def test_none_is_reproducible_from_the_seed(vit_hub) -> None:
    name = f"open_clip:hf-hub:{VIT_REPO}"
    first, again, other = (build_backbone(name, "none", 32, seed=s).model.state_dict() for s in (3, 3, 4))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["proj"], other["proj"])
    assert weights_identity(name, "none", 3).startswith("none:seed=3:")
    assert weights_identity(name, "none", 3) != weights_identity(name, "none", 4)


def test_biomedclip_on_meta_with_an_empty_cache(tmp_path, monkeypatch) -> None:
    offline_hub(tmp_path, monkeypatch)
    meta_backbone.cache_clear()
    proj, pre = meta_backbone("biomedclip", None, "proj"), meta_backbone("biomedclip", None, "pre_proj")
    assert (proj.num_features, pre.num_features) == (512, 768)
    assert proj.model.trunk.pretrained_cfg["architecture"] == "vit_base_patch16_224"
    assert next(proj.model.parameters()).device.type == "meta"
    assert proj.preprocess.size == 224 and proj.preprocess.interpolation == "bicubic"
    meta_backbone.cache_clear()


# ---------------------------------------------------------------------------------------------------------------
# refusals


def test_offline_without_cache_is_one_line(tmp_path, monkeypatch) -> None:
    offline_hub(tmp_path, monkeypatch)
    with pytest.raises(UserError) as caught:
        build_backbone("open_clip:hf-hub:org/missing", "pretrained", 32)
    line = str(caught.value)
    assert "org/missing" in line and "HF_HUB_OFFLINE" in line and "hf download org/missing" in line
    assert "\n" not in line


def test_missing_open_clip_names_the_extra(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "open_clip" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install 'medtransfer\[clip\]'"):
        build_backbone("open_clip:ViT-B-32", "none", 32)


def test_builtin_tags_are_named_or_refused(tmp_path, monkeypatch) -> None:
    offline_hub(tmp_path, monkeypatch)
    tags = open_clip.list_pretrained_tags_by_model("ViT-B-32")
    with pytest.raises(UserError, match=f"{tags[0]}, {tags[1]}"):  # several tags and none chosen
        build_backbone("open_clip:ViT-B-32", "pretrained", 32)
    with pytest.raises(UserError, match="no pretrained tag 'nope'"):
        build_backbone("open_clip:ViT-B-32@nope", "none", 32)
    with pytest.raises(UserError, match="did you mean"):
        build_backbone("open_clip:ViT-B-33", "none", 32)
    with pytest.raises(UserError, match="open_clip:ViT-B-32-quickgelu@openai"):  # trained with QuickGELU
        build_backbone("open_clip:ViT-B-32@openai", "none", 32)
    tag = "laion2b_s34b_b79k"
    assert open_clip.get_pretrained_cfg("ViT-B-32", tag)["hf_hub"]
    with pytest.raises(UserError, match="none of open_clip_model.safetensors, open_clip_pytorch_model.bin of laion/"
                                        ".* is in the local Hugging Face cache"):
        build_backbone(f"open_clip:ViT-B-32@{tag}", "pretrained", 32)
    assert weights_identity(f"open_clip:ViT-B-32@{tag}", "pretrained", 0) == f"open_clip:ViT-B-32:{tag}"
    backbone = meta_backbone(f"open_clip:ViT-B-32@{tag}", 64, "auto")
    assert backbone.num_features == 512 and backbone.preprocess.size == 64


def test_squash_resize_is_refused(tmp_path, monkeypatch) -> None:
    offline_hub(tmp_path, monkeypatch)
    with pytest.raises(UserError, match="resize_mode 'squash'"):
        meta_backbone("open_clip:ViT-B-16-SigLIP@webli", None)


# ---------------------------------------------------------------------------------------------------------------
# fine-tuning: blocks, LoRA, gradient checkpointing


def test_vit_freeze_blocks(vit_hub) -> None:
    backbone = build_backbone(f"open_clip:hf-hub:{VIT_REPO}", "pretrained", 32)
    groups = backbone.block_groups()
    assert len(groups.blocks) == 2
    assert set(groups.stem) == {"class_embedding", "positional_embedding", "conv1.weight", "ln_pre.weight",
                                "ln_pre.bias"}
    assert set(groups.tail) == {"proj", "ln_post.weight", "ln_post.bias"}
    frozen = adapt.freeze_blocks(backbone, 1)
    trainable = {n for n, p in backbone.model.named_parameters() if p.requires_grad}
    assert set(frozen) == set(groups.stem) | set(groups.blocks[0])
    assert trainable == set(groups.blocks[1]) | set(groups.tail)


def test_vit_lora_adapts_attention_and_merges(vit_hub) -> None:
    backbone = build_backbone(f"open_clip:hf-hub:{VIT_REPO}", "pretrained", 32)
    assert backbone.lora_targets() == ["transformer.resblocks.0.attn", "transformer.resblocks.1.attn"]
    keys = set(backbone.model.state_dict())
    assert adapt.add_lora(backbone, 2) > 0
    for name, param in backbone.model.named_parameters():
        if "lora_B" in name:  # a non-zero update, so merging has something to fold in
            param.data.normal_(generator=torch.Generator().manual_seed(0))
    x = images(32)
    out = backbone(x)
    out.sum().backward()
    assert any(p.grad is not None for n, p in backbone.model.named_parameters() if "lora_" in n)
    adapt.merge_lora(backbone)
    assert set(backbone.model.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), out.detach(), rtol=1e-4, atol=1e-5)


def test_grad_checkpointing(vit_hub) -> None:
    backbone = build_backbone(f"open_clip:hf-hub:{VIT_REPO}", "pretrained", 32).train()
    backbone.set_grad_checkpointing()
    assert backbone.model.transformer.grad_checkpointing
    backbone(images(32)).sum().backward()


# ---------------------------------------------------------------------------------------------------------------
# every mode on real data (the lead's harness)


def test_every_mode_on_breastmnist(tmp_path, monkeypatch, vit_files, shared_data) -> None:
    """Frozen (features = open_clip's encode_image), finetune, --freeze-blocks 1, --lora-rank 2, predict."""
    data = breast(shared_data)
    cache = offline_hub(tmp_path, monkeypatch)
    put_snapshot(cache, VIT_REPO, vit_files)
    reference = open_clip_model(VIT_REPO, 64)
    check_every_mode(data, tmp_path, f"open_clip:hf-hub:{VIT_REPO}", reference.encode_image, "proj", 64)
