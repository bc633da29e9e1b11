"""The timm family beyond the registry: `hf-hub:` models in timm's own hub layout (a fake, offline Hugging Face
cache), revisions in the weights' identity, checkpoints nested under training containers, and one-line errors for
gated and uncached models."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from fake_hub import COMMIT_A, COMMIT_B, offline_hub, put_snapshot
from family_checks import breast, check_every_mode
from huggingface_hub.errors import GatedRepoError
from timm.models._hub import save_for_hf

from medtransfer.engine.features import model_key
from medtransfer.errors import UserError
from medtransfer.models.backbone import build_backbone, weights_identity

TINY_VIT = {"depth": 2, "embed_dim": 32, "num_heads": 2, "patch_size": 8, "img_size": 32}
REPO = "org/tiny-vit"


def tiny_vit(seed: int, **arch: object) -> torch.nn.Module:
    """A ViT with random weights drawn from `seed`: two blocks of width 32, or ViT-Ti/16 at 32 px as `arch` says."""
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **(arch or TINY_VIT)).eval()


def timm_hub_folder(folder: Path, seed: int) -> dict[str, Path]:
    """The files timm's own `save_for_hf` writes (config.json with architecture and model_args, model.safetensors)."""
    save_for_hf(tiny_vit(seed), str(folder), model_args=TINY_VIT, safe_serialization=True)
    return {name: folder / name for name in ("config.json", "model.safetensors")}


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An offline cache holding org/tiny-vit at two commits (main → COMMIT_A), with different weights."""
    cache = offline_hub(tmp_path, monkeypatch)
    put_snapshot(cache, REPO, timm_hub_folder(tmp_path / "a", seed=1), COMMIT_A)
    put_snapshot(cache, REPO, timm_hub_folder(tmp_path / "b", seed=2), COMMIT_B, ref=None)
    return cache


def cls_mean(model: torch.nn.Module) -> callable:
    """timm's own forward, pooled as DINOv2 is probed: class token ⊕ mean patch token."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        tokens = model.forward_features(x)
        return torch.cat([tokens[:, 0], tokens[:, model.num_prefix_tokens:].mean(dim=1)], dim=1)
    return forward


def test_hf_hub_model_loads_from_the_cache_with_the_features_timm_gives(hub_cache) -> None:
    backbone = build_backbone(f"hf-hub:{REPO}", "pretrained", 32).eval()
    own = timm.create_model(f"hf-hub:{REPO}", pretrained=True, num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone(x), cls_mean(own)(x), rtol=1e-5, atol=1e-6)
    assert backbone.weights_id == f"hub:{REPO}@{COMMIT_A}"
    assert any(COMMIT_A in note for note in backbone.notes)


def test_a_changed_revision_is_a_new_weights_identity(hub_cache) -> None:
    main = weights_identity(f"hf-hub:{REPO}", "pretrained", 0)
    pinned = weights_identity(f"hf-hub:{REPO}@{COMMIT_B}", "pretrained", 0)
    assert main == f"hub:{REPO}@{COMMIT_A}" and pinned == f"hub:{REPO}@{COMMIT_B}"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the pinned revision's own weights, not main's
        got = build_backbone(f"hf-hub:{REPO}@{COMMIT_B}", "pretrained", 32).eval()(x)
        assert torch.allclose(got, cls_mean(tiny_vit(2))(x), rtol=1e-5, atol=1e-6)
    (hub_cache / f"models--{REPO.replace('/', '--')}" / "refs" / "main").write_text(COMMIT_B)  # main moves on
    assert weights_identity(f"hf-hub:{REPO}", "pretrained", 0) == pinned


def test_a_changed_revision_is_a_new_feature_cache_key(hub_cache) -> None:
    """The feature cache's model part, as a frozen run keys its entry: main moving to a new commit changes it."""
    before = build_backbone(f"hf-hub:{REPO}", "pretrained", 32)
    (hub_cache / f"models--{REPO.replace('/', '--')}" / "refs" / "main").write_text(COMMIT_B)
    after = build_backbone(f"hf-hub:{REPO}", "pretrained", 32)
    assert model_key(before, before.weights_id) != model_key(after, after.weights_id)
    assert model_key(before, before.weights_id)["weights"] == f"hub:{REPO}@{COMMIT_A}"


def test_every_mode_on_breastmnist_for_a_hub_timm_model(hub_cache, shared_data, tmp_path) -> None:
    """Frozen (features = timm's own), finetune, --freeze-blocks 1, --lora-rank 2 and predict, all offline."""
    own = timm.create_model(f"hf-hub:{REPO}", pretrained=True, num_classes=0).eval()
    check_every_mode(breast(shared_data), tmp_path, f"hf-hub:{REPO}", cls_mean(own), "cls_mean", 32)


@pytest.mark.parametrize("container", ["model", "state_dict", "teacher"])
def test_a_checkpoint_nested_under_a_training_key_loads_into_a_timm_vit(tmp_path, container) -> None:
    source = tiny_vit(3, img_size=32)  # the registry's ViT-Ti/16, as a user's checkpoint of it would be
    path = tmp_path / "ckpt.pth"
    torch.save({container: {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": torch.tensor(7)},
               path)
    backbone = build_backbone("vit_tiny_patch16_224", str(path), 32, "cls_mean").eval()
    assert backbone.spec.model_id == "vit_tiny_patch16_224"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone(x), cls_mean(source)(x), rtol=1e-5, atol=1e-6)
    assert any(f"{container!r} key" in note for note in backbone.notes)
    assert any("'module.' prefix" in note for note in backbone.notes)


def test_a_masked_autoencoder_checkpoint_leaves_its_decoder_out_and_says_so(tmp_path) -> None:
    """RETFound's published file is an MAE checkpoint: encoder keys plus a decoder that probing never uses."""
    source = tiny_vit(4, img_size=32)
    state = dict(source.state_dict())
    state |= {"mask_token": torch.zeros(1, 1, 192), "decoder_embed.weight": torch.zeros(16, 192),
              "decoder_pred.weight": torch.zeros(48, 16)}
    path = tmp_path / "mae.pth"
    torch.save({"model": state}, path)
    backbone = build_backbone("vit_tiny_patch16_224", str(path), 32, "mean").eval()
    assert any("3 masked-autoencoder decoder tensors" in note for note in backbone.notes)
    del state["blocks.0.attn.qkv.weight"]
    torch.save({"model": state}, path)
    with pytest.raises(UserError, match=r"missing keys \(1\): blocks\.0\.attn\.qkv\.weight"):
        build_backbone("vit_tiny_patch16_224", str(path), 32, "mean")


def test_an_uncached_hub_model_offline_is_one_line_naming_the_repo_and_the_fix(tmp_path, monkeypatch) -> None:
    offline_hub(tmp_path, monkeypatch)
    with pytest.raises(UserError) as info:
        build_backbone("hf-hub:org/absent", "pretrained", 32)
    line = info.value.line()
    assert "org/absent" in line and "HF_HUB_OFFLINE" in line and "hf download org/absent" in line
    assert "\n" not in line


def test_a_gated_model_names_the_token_and_the_login(tmp_path, monkeypatch) -> None:
    """The hub answers 403 for a gated repo without access: huggingface_hub raises GatedRepoError."""
    import httpx2

    def gated(repo_id, filename, revision=None):
        response = httpx2.Response(403, request=httpx2.Request("GET", f"https://huggingface.co/{repo_id}"))
        raise GatedRepoError(f"Access to model {repo_id} is restricted", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    with pytest.raises(UserError) as info:
        build_backbone("uni", "pretrained", 224)
    line = info.value.line()
    assert "MahmoodLab/UNI" in line and "gated" in line
    assert "HF_TOKEN" in line and "hf auth login" in line and "https://huggingface.co/MahmoodLab/UNI" in line


def test_retfound_pretrained_names_its_gated_file(tmp_path, monkeypatch) -> None:
    offline_hub(tmp_path, monkeypatch)
    with pytest.raises(UserError) as info:
        build_backbone("retfound", "pretrained", 224)
    line = info.value.line()
    assert "RETFound_mae_natureCFP.pth" in line and "YukunZhou/RETFound_mae_natureCFP" in line
    assert "--weights PATH" in line


def test_predict_refuses_a_frozen_run_whose_hub_weights_moved_on(hub_cache, tmp_path) -> None:
    """A frozen run predicts with its backbone's pretrained weights: main moving to another commit is named."""
    from helpers import write_class_folder

    from medtransfer.config import parse_config
    from medtransfer.inference import predict
    from medtransfer.runner import train

    root = write_class_folder(tmp_path / "imgs", {"a": 12, "b": 12}, size=32)
    cfg = parse_config({"data": str(root), "backbone": f"hf-hub:{REPO}", "image_size": 32, "epochs": 2,
                        "bootstrap": 100, "workers": 0, "out": str(tmp_path / "run"),
                        "cache_dir": str(tmp_path / "cache")})
    run_dir = train(cfg).run_dir.path
    image = root / "a" / "img_000.png"
    assert len(predict(run_dir, [image], "cpu")) == 1
    (hub_cache / f"models--{REPO.replace('/', '--')}" / "refs" / "main").write_text(COMMIT_B)
    with pytest.raises(UserError) as info:
        predict(run_dir, [image], "cpu")
    line = info.value.line()
    assert f"trained on hub:{REPO}@{COMMIT_A}" in line and f"hf download {REPO} --revision {COMMIT_A}" in line


def test_an_unknown_pretrained_tag_is_one_line_listing_the_tags() -> None:
    with pytest.raises(UserError, match="no pretrained tag 'badtag' for resnet50 .* tv_in1k"):
        build_backbone("resnet50.badtag", "none", 32)


def test_imagenet_is_refused_for_a_checkpoint_published_outside_timm() -> None:
    from medtransfer.models.backbone import check_weights

    check_weights("resnet18", "imagenet")
    with pytest.raises(UserError, match="retfound's weights are its own checkpoint"):
        check_weights("retfound", "imagenet")
