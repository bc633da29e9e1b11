"""Partial fine-tuning, LoRA and gradient checkpointing: what trains really changes, what is frozen stays bit-exact."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from medtransfer.engine.finetune import Classifier
from medtransfer.errors import UserError
from medtransfer.models.adapt import (
    add_lora,
    block_groups,
    count_blocks,
    enable_grad_checkpointing,
    freeze_blocks,
    frozen_norm_eval,
    merge_lora,
)
from medtransfer.models.backbone import Backbone, build_backbone, meta_backbone

VIT = ("vit_tiny_patch16_224", 32)
DINO = ("dinov2_vits14", 28)


def _meta_backbone(timm_name: str) -> Backbone:
    """Architecture only (no memory, no init): enough to count blocks of big models."""
    return meta_backbone(timm_name, None)


def _numel(module: nn.Module, keep) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if keep(name, p))


def _trainable(module: nn.Module) -> int:
    return _numel(module, lambda _, p: p.requires_grad)


def _train_steps(model: nn.Module, size: int, steps: int = 3, lr: float = 1e-2) -> None:
    """AdamW with weight decay over *all* parameters, as the finetune loop builds it: frozen ones must be skipped."""
    torch.manual_seed(1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    x, y = torch.randn(4, 3, size, size), torch.tensor([0, 1, 0, 1])
    for _ in range(steps):
        model.train()
        frozen_norm_eval(model)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("n", [0, 1, 3])
def test_freeze_blocks_resnet18_trains_last_stages(n):
    backbone = build_backbone("resnet18", "none", 32)
    frozen = freeze_blocks(backbone, n)
    stages = tuple(f"layer{i}." for i in range(5 - n, 5))  # the last n of layer1..layer4 (n = 0: none)
    assert _trainable(backbone) == _numel(backbone.model, lambda name, _: name.startswith(stages))
    assert len(frozen) == sum(not p.requires_grad for p in backbone.parameters())
    assert not any(name.startswith(stages) for name in frozen)


@pytest.mark.parametrize(("name", "size"), [VIT, DINO])
def test_freeze_blocks_vit_trains_last_blocks_and_final_norm(name, size):
    backbone = build_backbone(name, "none", size)
    depth = len(backbone.model.blocks)
    assert count_blocks(backbone) == depth
    freeze_blocks(backbone, 2)
    trained = tuple(f"blocks.{i}." for i in (depth - 2, depth - 1)) + ("norm.",)
    assert _trainable(backbone) == _numel(backbone.model, lambda n, _: n.startswith(trained))
    for frozen_name in ("cls_token", "pos_embed", "patch_embed.proj.weight", f"blocks.{depth - 3}.attn.qkv.weight"):
        assert not backbone.model.get_parameter(frozen_name).requires_grad


def test_freeze_blocks_all_freezes_nothing_and_more_is_refused():
    backbone = build_backbone("resnet18", "none", 32)
    total = _trainable(backbone)
    assert freeze_blocks(backbone, 4) == []
    assert _trainable(backbone) == total
    with pytest.raises(UserError) as info:
        freeze_blocks(backbone, 5)
    assert "more than the 4 blocks" in info.value.problem and "0 (train only the head) to 4" in info.value.fix


def test_freeze_blocks_negative_names_block_count():
    backbone = build_backbone("resnet18", "none", 32)
    with pytest.raises(UserError) as info:
        freeze_blocks(backbone, -1)
    assert info.value.subject == "--freeze-blocks -1" and "4 blocks" in info.value.fix


def test_block_counts_of_other_families():
    densenet, vgg = _meta_backbone("densenet121"), _meta_backbone("vgg16")
    assert count_blocks(densenet) == 4  # denseblock i + transition i form block i
    n_convs = sum(isinstance(m, nn.Conv2d) for m in vgg.model.features)
    assert count_blocks(vgg) == n_convs - 1  # timm groups VGG by conv layer; the first is the stem
    # Parts no group matches (DenseNet's final norm, VGG's pre-logits MLP) are never frozen.
    assert block_groups(densenet).tail == ["features.norm5.weight", "features.norm5.bias"]
    freeze_blocks(vgg, 0)
    assert _trainable(vgg) == _numel(vgg.model, lambda n, _: n.startswith("pre_logits."))


@pytest.mark.parametrize(("name", "size", "n"), [("resnet18", 32, 1), (*VIT, 1)])
def test_frozen_parameters_and_batchnorm_stats_stay_bit_identical(name, size, n):
    backbone = build_backbone(name, "none", size)
    frozen = set(freeze_blocks(backbone, n))
    model = Classifier(backbone, 2, "linear")
    before = _snapshot(model)
    _train_steps(model, size)
    after = model.state_dict()
    frozen_keys = {f"backbone.model.{p}" for p in frozen}
    frozen_bn = {module_name for module_name, m in model.named_modules()
                 if isinstance(m, nn.BatchNorm2d) and f"{module_name}.weight" in frozen_keys}
    bn_buffers = {k for k in before if k.rsplit(".", 1)[0] in frozen_bn and k.rsplit(".", 1)[1].startswith(
        ("running_", "num_batches"))}
    for key in frozen_keys | bn_buffers:
        assert torch.equal(before[key], after[key]), key
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(not torch.equal(before[k], after[k]) for k in trainable)
    if name == "resnet18":
        assert len(frozen_bn) == sum(isinstance(m, nn.BatchNorm2d) and not module_name.startswith("layer4.")
                                     for module_name, m in backbone.model.named_modules())
        # The trainable stage's BatchNorm still learns its statistics.
        assert not torch.equal(before["backbone.model.layer4.1.bn2.running_mean"],
                               after["backbone.model.layer4.1.bn2.running_mean"])


def _attn_linears(backbone: Backbone) -> dict[str, nn.Linear]:
    return {n: m for n, m in backbone.model.named_modules()
            if isinstance(m, nn.Linear) and n.endswith((".attn.qkv", ".attn.proj"))}


@pytest.mark.parametrize(("name", "size"), [VIT, DINO])
def test_lora_trains_only_adapters(name, size):
    backbone = build_backbone(name, "none", size).eval()
    rank = 4
    linears = _attn_linears(backbone)
    expected = sum(rank * (m.in_features + m.out_features) for m in linears.values())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        plain_out = backbone(x)
    assert add_lora(backbone, rank) == expected
    assert _trainable(backbone) == expected
    assert all("lora_" in n for n, p in backbone.named_parameters() if p.requires_grad)
    assert len([n for n, _ in backbone.named_parameters() if "lora_A" in n]) == len(linears) == 2 * count_blocks(
        backbone)
    with torch.no_grad():
        assert torch.equal(backbone(x), plain_out)  # LoRA B starts at zero


def test_lora_training_then_merge_gives_plain_model():
    name, size = VIT
    backbone = build_backbone(name, "none", size)
    plain_keys = list(backbone.state_dict())
    base = _snapshot(backbone)
    add_lora(backbone, 4, alpha=8.0)
    model = Classifier(backbone, 2, "linear")
    lora_before = {k: v for k, v in _snapshot(backbone).items() if "lora_" in k}
    _train_steps(model, size)
    state = backbone.state_dict()
    for key, value in state.items():
        if "lora_" in key:
            assert not torch.equal(value, lora_before[key]), key
        else:
            assert torch.equal(value, base[key.replace(".base_layer", "")]), key

    x = torch.randn(3, 3, size, size)
    backbone.eval()
    with torch.no_grad():
        adapted = backbone(x)
        merge_lora(backbone)
        merged = backbone(x)
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)
    assert list(backbone.state_dict()) == plain_keys
    assert not torch.equal(backbone.state_dict()["model.blocks.0.attn.qkv.weight"], base["model.blocks.0.attn.qkv.weight"])
    # What `medtransfer predict` does: a plain backbone loads the saved weights and gives the same outputs.
    fresh = build_backbone(name, "none", size, seed=1).eval()
    fresh.load_state_dict(backbone.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), adapted, atol=1e-5, rtol=1e-5)


def test_merge_lora_without_adapters_is_noop():
    backbone = build_backbone(VIT[0], "none", VIT[1])
    before = _snapshot(backbone)
    merge_lora(backbone)
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())


def test_lora_on_cnn_is_user_error():
    with pytest.raises(UserError) as info:
        add_lora(build_backbone("resnet18", "none", 32), 4)
    assert "resnet18" in info.value.problem and "--freeze-blocks" in info.value.fix


def test_lora_without_peft_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` raise ImportError
    with pytest.raises(UserError) as info:
        add_lora(build_backbone(VIT[0], "none", VIT[1]), 4)
    assert "medtransfer[lora]" in info.value.fix


def _grads(backbone: Backbone, x: torch.Tensor, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    backbone.train()
    (backbone(x) * weight).sum().backward()
    return {n: p.grad.clone() for n, p in backbone.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lora", [False, True])
def test_grad_checkpointing_gives_the_same_gradients(monkeypatch, lora):
    name, size = VIT
    plain = build_backbone(name, "none", size)
    if lora:  # frozen patch embedding: checkpointed blocks get inputs that need no grad, LoRA must still learn
        add_lora(plain, 4)
        with torch.no_grad():  # B = 0 would make every gradient of A zero
            for n, p in plain.named_parameters():
                if "lora_B" in n:
                    p.normal_(std=0.1)
    checkpointed = copy.deepcopy(plain)
    enable_grad_checkpointing(checkpointed)
    calls = []
    original = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    torch.manual_seed(0)
    x, weight = torch.randn(2, 3, size, size), torch.randn(plain.num_features)
    expected = _grads(plain, x, weight)
    assert not calls
    got = _grads(checkpointed, x, weight)
    assert len(calls) == len(plain.model.blocks)  # timm really recomputed each block
    assert got.keys() == expected.keys() and len(got) > 0
    for key in expected:
        assert expected[key].abs().sum() > 0, key
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5)


def test_grad_checkpointing_unsupported_is_user_error():
    with pytest.raises(UserError, match="vgg16"):
        enable_grad_checkpointing(_meta_backbone("vgg16"))
