"""The transformers family against transformers' own forward passes, with tiny models saved by `save_pretrained`
(config.json, model.safetensors) and an image processor's `save_pretrained` (preprocessor_config.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fake_hub import COMMIT_A, COMMIT_B, offline_hub, put_snapshot
from family_checks import breast, check_every_mode
from huggingface_hub.errors import GatedRepoError
from safetensors.torch import load_file, save_file
from transformers import (AutoModel, BitImageProcessor, Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig,
                          Dinov2WithRegistersModel, DINOv3ViTConfig, DINOv3ViTModel, SiglipConfig,
                          SiglipImageProcessor, SiglipModel, SiglipVisionModel)

from medtransfer.errors import UserError
from medtransfer.models import adapt
from medtransfer.models.backbone import available_offline, build_backbone, meta_backbone, weights_identity

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "patch_size": 8, "image_size": 32}
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]
REPO = "org/tiny-dino"


def dino_processor() -> BitImageProcessor:
    """DINOv2's processor layout: shortest-edge resize then a centre crop, bicubic."""
    return BitImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                             resample=3, image_mean=MEAN, image_std=STD)


def save(model: torch.nn.Module, processor, folder: Path) -> Path:
    """The model's and its processor's save_pretrained, into one folder."""
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    return folder


def tiny_dino(seed: int) -> Dinov2Model:
    torch.manual_seed(seed)
    return Dinov2Model(Dinov2Config(**TINY)).eval()


@pytest.fixture()
def dino_folder(tmp_path) -> Path:
    return save(tiny_dino(0), dino_processor(), tmp_path / "dino")


def pooled(out, pooling: str, prefix: int = 1) -> torch.Tensor:
    """Pool transformers' own outputs the way the probe is defined."""
    tokens = out.last_hidden_state
    if pooling == "pooler":
        return out.pooler_output
    if pooling == "cls":
        return tokens[:, 0]
    if pooling == "mean":
        return tokens[:, prefix:].mean(1)
    return torch.cat([tokens[:, 0], tokens[:, prefix:].mean(1)], 1)


@pytest.mark.parametrize("pooling", ["cls", "cls_mean", "mean", "pooler"])
def test_a_dinov2_folder_gives_transformers_own_features(dino_folder, pooling) -> None:
    backbone = build_backbone(f"hf:{dino_folder}", "pretrained", 32, pooling)
    own = AutoModel.from_pretrained(dino_folder).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got, want = backbone(x), pooled(own(pixel_values=x), pooling)
    assert got.shape == (2, backbone.num_features) == (2, 64 if pooling == "cls_mean" else 32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not backbone.training and backbone.model.dtype == torch.float32
    assert backbone.pooling == pooling


def test_the_preprocessing_is_read_from_the_processor_config(dino_folder) -> None:
    pre = build_backbone(f"hf:{dino_folder}", "pretrained", None).preprocess
    assert (pre.size, pre.mean, pre.std, pre.interpolation) == (32, tuple(MEAN), tuple(STD), "bicubic")
    assert pre.crop_pct == pytest.approx(32 / 40)
    smaller = build_backbone(f"hf:{dino_folder}", "pretrained", 16).preprocess
    assert smaller.size == 16 and smaller.crop_pct == pytest.approx(32 / 40)  # the run's size keeps crop_pct
    assert build_backbone(f"hf:{dino_folder}", "pretrained", None).pooling == "cls_mean"  # the family default


def test_an_unknown_resample_and_a_bad_image_size_are_refused(dino_folder) -> None:
    config = json.loads((dino_folder / "preprocessor_config.json").read_text())
    (dino_folder / "preprocessor_config.json").write_text(json.dumps({**config, "resample": 0}))
    with pytest.raises(UserError, match="resample"):
        build_backbone(f"hf:{dino_folder}", "pretrained", 32)
    (dino_folder / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="patch size 8"):
        build_backbone(f"hf:{dino_folder}", "pretrained", 30)


def test_a_folder_without_a_preprocessor_config_is_refused(tmp_path) -> None:
    folder = save(tiny_dino(0), None, tmp_path / "bare")
    with pytest.raises(UserError, match="preprocessor_config.json.*save_pretrained"):
        build_backbone(f"hf:{folder}", "pretrained", 32)


def test_a_folder_identity_is_the_files_content(dino_folder, tmp_path) -> None:
    name = f"hf:{dino_folder}"
    first = weights_identity(name, "pretrained", 0)
    assert first.startswith("file:") and build_backbone(name, "pretrained", 32).weights_id == first
    assert available_offline(name)
    save(tiny_dino(1), dino_processor(), dino_folder)  # other weights in the same folder: another identity
    assert weights_identity(name, "pretrained", 0) != first


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch) -> Path:
    """org/tiny-dino at COMMIT_A (main) and COMMIT_B (no ref), different weights; offline."""
    cache = offline_hub(tmp_path, monkeypatch)
    for seed, commit, ref in ((0, COMMIT_A, "main"), (1, COMMIT_B, None)):
        folder = save(tiny_dino(seed), dino_processor(), tmp_path / f"src{seed}")
        files = {n: folder / n for n in ("config.json", "model.safetensors", "preprocessor_config.json")}
        put_snapshot(cache, REPO, files, commit, ref)
    return cache


def test_a_cached_hub_model_loads_offline_with_its_commit_as_identity(hub_cache, tmp_path) -> None:
    backbone = build_backbone(f"hf:{REPO}", "pretrained", 32, "cls")
    assert backbone.weights_id == f"hub:{REPO}@{COMMIT_A}" == weights_identity(f"hf:{REPO}", "pretrained", 0)
    assert available_offline(f"hf:{REPO}")
    own = AutoModel.from_pretrained(tmp_path / "src0").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), own(pixel_values=x).last_hidden_state[:, 0], rtol=1e-5, atol=1e-6)
    pinned = build_backbone(f"hf:{REPO}@{COMMIT_B}", "pretrained", 32, "cls")
    assert pinned.weights_id == f"hub:{REPO}@{COMMIT_B}"
    with torch.no_grad():
        assert not torch.allclose(pinned(x), backbone(x))
    (hub_cache / f"models--{REPO.replace('/', '--')}" / "refs" / "main").write_text(COMMIT_B)  # main moved
    assert weights_identity(f"hf:{REPO}", "pretrained", 0) == f"hub:{REPO}@{COMMIT_B}"


def test_an_absent_repo_offline_is_one_line_naming_the_fix(tmp_path, monkeypatch) -> None:
    offline_hub(tmp_path, monkeypatch)
    with pytest.raises(UserError, match=r"org/absent.*HF_HUB_OFFLINE.*hf download org/absent") as err:
        build_backbone("hf:org/absent", "pretrained", 32)
    assert "\n" not in str(err.value)
    assert not available_offline("hf:org/absent")


def test_a_gated_repo_says_how_to_log_in(monkeypatch) -> None:
    import huggingface_hub

    import httpx2

    def gated(repo_id, filename, revision=None):
        response = httpx2.Response(403, request=httpx2.Request("GET", f"https://huggingface.co/{repo_id}"))
        raise GatedRepoError(f"Access to model {repo_id} is restricted", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    with pytest.raises(UserError, match=r"org/gated-model.*gated.*HF_TOKEN.*hf auth login"):
        build_backbone("hf:org/gated-model", "pretrained", 32)


def tiny_siglip(seed: int) -> SiglipModel:
    torch.manual_seed(seed)
    config = SiglipConfig(vision_config=TINY, text_config={"hidden_size": 32, "num_hidden_layers": 1,
                                                             "num_attention_heads": 2, "intermediate_size": 64,
                                                             "vocab_size": 100, "max_position_embeddings": 16})
    return SiglipModel(config).eval()


def test_a_siglip_model_gives_its_vision_tower_and_pooler(tmp_path) -> None:
    source = tiny_siglip(0)
    processor = SiglipImageProcessor(size={"height": 32, "width": 32}, resample=2, image_mean=[0.5] * 3,
                                     image_std=[0.5] * 3)
    folder = save(source, processor, tmp_path / "siglip")
    backbone = build_backbone(f"hf:{folder}", "pretrained", None)
    assert isinstance(backbone.model, SiglipVisionModel)
    assert backbone.poolings() == ("pooler", "mean") and backbone.pooling == "pooler"
    assert any("text_model" in note for note in backbone.notes)  # the other tower left out, and said so
    pre = backbone.preprocess
    assert (pre.size, pre.interpolation, pre.crop_pct) == (32, "bilinear", 1.0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = source.get_image_features(pixel_values=x)
        want = want if isinstance(want, torch.Tensor) else want.pooler_output
        torch.testing.assert_close(backbone(x), want, rtol=1e-5, atol=1e-6)
        small = build_backbone(f"hf:{folder}", "pretrained", 16)  # interpolated position embeddings
        assert small(torch.randn(1, 3, 16, 16)).shape == (1, 32)
    names = adapt.lora_targets(backbone)
    assert len(names) == 8 and all("self_attn" in n for n in names)  # 2 layers × q/k/v/out, not the head
    assert not any(n.startswith("head") for n in names)


@pytest.mark.parametrize("kind", ["dinov2_registers", "dinov3"])
def test_registers_are_left_out_of_the_mean(tmp_path, kind) -> None:
    torch.manual_seed(0)
    if kind == "dinov2_registers":
        source = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**TINY, num_register_tokens=4)).eval()
    else:
        source = DINOv3ViTModel(DINOv3ViTConfig(**TINY, num_register_tokens=4)).eval()
    folder = save(source, dino_processor(), tmp_path / kind)
    x = torch.randn(2, 3, 32, 32)
    for pooling in ("cls_mean", "mean"):
        backbone = build_backbone(f"hf:{folder}", "pretrained", 32, pooling)
        assert backbone.prefix_tokens == 5
        with torch.no_grad():
            out = source(pixel_values=x)
            assert out.last_hidden_state.shape[1] == 1 + 4 + 16
            torch.testing.assert_close(backbone(x), pooled(out, pooling, prefix=5), rtol=1e-5, atol=1e-6)
    names = adapt.lora_targets(backbone)
    assert len(names) == 8, names
    groups = adapt.block_groups(backbone)
    assert len(groups.blocks) == 2 and any("register" in n for n in groups.stem)


def break_weights(folder: Path, change) -> None:
    state = load_file(folder / "model.safetensors")
    change(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def test_a_missing_key_is_refused_by_name(dino_folder) -> None:
    break_weights(dino_folder, lambda s: s.pop("layernorm.weight"))
    with pytest.raises(UserError, match=r"missing keys.*layernorm\.weight"):
        build_backbone(f"hf:{dino_folder}", "pretrained", 32)


def test_a_wrong_shape_is_refused_by_name(dino_folder) -> None:
    break_weights(dino_folder, lambda s: s.__setitem__("layernorm.bias", torch.zeros(31)))
    with pytest.raises(UserError, match=r"shape mismatch.*layernorm\.bias"):
        build_backbone(f"hf:{dino_folder}", "pretrained", 32)


def test_an_unexpected_key_is_refused_by_name(dino_folder) -> None:
    break_weights(dino_folder, lambda s: s.__setitem__("extra.weight", torch.zeros(3)))
    with pytest.raises(UserError, match=r"unexpected keys.*extra\.weight"):
        build_backbone(f"hf:{dino_folder}", "pretrained", 32)


def test_a_checkpoint_file_loads_strictly_into_the_config_built_model(dino_folder, tmp_path) -> None:
    source = tiny_dino(5)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    backbone = build_backbone(f"hf:{dino_folder}", str(path), 32, "cls")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), source(pixel_values=x).pooler_output, rtol=1e-5, atol=1e-6)
    assert backbone.weights_id.startswith("file:")
    torch.save({k: v for k, v in source.state_dict().items() if k != "layernorm.bias"}, path)
    with pytest.raises(UserError, match=r"layernorm\.bias"):
        build_backbone(f"hf:{dino_folder}", str(path), 32, "cls")


def test_weights_none_are_reproducible_from_the_seed(dino_folder) -> None:
    name = f"hf:{dino_folder}"
    x = torch.randn(2, 3, 32, 32)
    a, b, c = (build_backbone(name, "none", 32, "cls", seed) for seed in (3, 3, 4))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
        assert not torch.allclose(a(x), c(x))
    assert a.weights_id == weights_identity(name, "none", 3) != weights_identity(name, "none", 4)
    assert a.weights_id.startswith("none:seed=3:")


@pytest.mark.parametrize(("name", "width", "pooling", "cls"), [("rad_dino", 768, "cls", "Dinov2Model"),
                                                               ("medsiglip", 1152, "pooler", "SiglipVisionModel")])
def test_catalog_entries_build_on_meta_with_no_cache(tmp_path, monkeypatch, name, width, pooling, cls) -> None:
    import huggingface_hub

    offline_hub(tmp_path, monkeypatch)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("network"))
    meta_backbone.cache_clear()
    backbone = meta_backbone(name, 224)
    assert type(backbone.model).__name__ == cls
    assert backbone.num_features == width and backbone.pooling == pooling
    assert next(backbone.model.parameters()).device.type == "meta"
    assert backbone.preprocess.size == 224 and backbone.weights_id == "meta"
    assert weights_identity(name, "none", 0).startswith("none:seed=0:")
    meta_backbone.cache_clear()


def test_freeze_blocks_and_lora_on_a_dinov2(dino_folder) -> None:
    backbone = build_backbone(f"hf:{dino_folder}", "pretrained", 32, "cls")
    groups = adapt.block_groups(backbone)
    assert len(groups.blocks) == 2 and all(n.startswith("encoder.layer.1.") for n in groups.blocks[1])
    adapt.freeze_blocks(backbone, 1)
    trainable = {n for n, p in backbone.model.named_parameters() if p.requires_grad}
    assert trainable == set(groups.blocks[1]) | set(groups.tail)
    fresh = build_backbone(f"hf:{dino_folder}", "pretrained", 32, "cls")
    keys = set(fresh.model.state_dict())
    names = adapt.lora_targets(fresh)
    assert len(names) == 8 and all(".attention." in n for n in names)
    adapt.add_lora(fresh, 2)
    out = fresh(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 32)
    assert all("lora_" in n for n, p in fresh.model.named_parameters() if p.requires_grad)
    adapt.merge_lora(fresh)
    assert set(fresh.model.state_dict()) == keys


def test_grad_checkpointing_switches_on(dino_folder) -> None:
    backbone = build_backbone(f"hf:{dino_folder}", "pretrained", 32, "cls")
    adapt.enable_grad_checkpointing(backbone)
    assert backbone.model.is_activation_checkpointing
    backbone.train()
    backbone(torch.randn(2, 3, 32, 32)).sum().backward()


def test_every_mode_on_breastmnist_for_a_hub_transformers_model(hub_cache, shared_data, tmp_path) -> None:
    """Frozen (features = transformers' own), finetune, --freeze-blocks 1, --lora-rank 2 and predict, offline."""
    own_model = AutoModel.from_pretrained(tmp_path / "src0").eval()

    def own(x: torch.Tensor) -> torch.Tensor:
        return pooled(own_model(pixel_values=x), "cls_mean")

    check_every_mode(breast(shared_data), tmp_path, f"hf:{REPO}", own, "cls_mean", 32)


def test_a_clip_model_gives_its_vision_tower_with_a_class_token(tmp_path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionModel

    torch.manual_seed(0)
    source = CLIPModel(CLIPConfig(vision_config=TINY, text_config={
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "vocab_size": 100, "max_position_embeddings": 16}, projection_dim=16)).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, resample=3)
    folder = save(source, processor, tmp_path / "clip")
    backbone = build_backbone(f"hf:{folder}", "pretrained", None, "pooler")
    assert isinstance(backbone.model, CLIPVisionModel)
    assert backbone.poolings() == ("cls_mean", "cls", "mean", "pooler")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = source.vision_model(pixel_values=x).pooler_output
        torch.testing.assert_close(backbone(x), want, rtol=1e-5, atol=1e-6)
    assert len(adapt.lora_targets(backbone)) == 8


def test_a_vit_classifier_checkpoint_loads_without_its_pooler(tmp_path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    source = ViTForImageClassification(ViTConfig(**TINY, num_labels=3)).eval()
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, resample=2)
    folder = save(source, processor, tmp_path / "vit")
    backbone = build_backbone(f"hf:{folder}", "pretrained", 32, "cls")
    assert "pooler" not in backbone.poolings() and any("no pooler" in n for n in backbone.notes)
    assert any("classifier" in n for n in backbone.notes)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = source.vit(pixel_values=x).last_hidden_state[:, 0]
        torch.testing.assert_close(backbone(x), want, rtol=1e-5, atol=1e-6)
    assert len(adapt.lora_targets(backbone)) == 8


def test_a_vit_mae_keeps_every_patch_in_order(tmp_path) -> None:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    torch.manual_seed(0)
    source = ViTMAEForPreTraining(ViTMAEConfig(**TINY, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                               decoder_num_attention_heads=2, decoder_intermediate_size=32)).eval()
    folder = save(source, dino_processor(), tmp_path / "mae")
    backbone = build_backbone(f"hf:{folder}", "pretrained", 32, "cls_mean")
    assert any("decoder" in n for n in backbone.notes)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first, again = backbone(x), backbone(x)
        source.config.mask_ratio = 0.0
        source.vit.embeddings.config.mask_ratio = 0.0
        own = source.vit(pixel_values=x, noise=torch.arange(16.0).expand(2, 16)).last_hidden_state
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(first, pooled(type("Out", (), {"last_hidden_state": own})(), "cls_mean"),
                               rtol=1e-5, atol=1e-6)


def test_a_dinov3_convnext_pools_its_feature_maps(tmp_path) -> None:
    from transformers import DINOv3ConvNextConfig, DINOv3ConvNextModel

    torch.manual_seed(0)
    source = DINOv3ConvNextModel(DINOv3ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1])).eval()
    folder = save(source, dino_processor(), tmp_path / "cnx")
    backbone = build_backbone(f"hf:{folder}", "pretrained", 32)
    assert backbone.poolings() == ("avg",) and backbone.num_features == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), source(pixel_values=x).pooler_output, rtol=1e-5, atol=1e-6)
    assert adapt.lora_targets(backbone) == []
    assert len(adapt.block_groups(backbone).blocks) == 4
    with pytest.raises(UserError, match="grad-checkpointing"):
        adapt.enable_grad_checkpointing(backbone)
