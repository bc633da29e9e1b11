"""What of a backbone trains: the last n blocks, LoRA adapters on ViT attention, and gradient checkpointing."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from types import ModuleType

from timm.models import group_parameters
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medtransfer.errors import UserError
from medtransfer.models.backbone import Backbone

# timm's attention projections: fused qkv + output proj (ViT, DINOv2, DeiT), split q/k/v (EVA), q + kv (PVT, Twins).
_ATTN_LINEAR = re.compile(r"(?:.*\.)?attn\.(?:qkv|q_proj|k_proj|v_proj|q|k|v|kv|proj)")


@dataclass(frozen=True)
class BlockGroups:
    """A backbone's parameter names (timm names, no `model.` prefix) by timm's coarse grouping, input to output."""

    stem: list[str]  # patch/conv stem, position embedding, class and register tokens
    blocks: list[list[str]]  # one list per block; timm folds a final norm into the last block (ViT `norm`)
    tail: list[str]  # matched by no group: neck and pre-logits (DenseNet norm5, VGG pre_logits, ViT fc_norm)


def _first_match(name: str, specs: list[tuple[str, list[re.Pattern]]]) -> str | None:
    """The matcher key timm assigns `name` to: the first whose regex matches, as in timm's group_with_matcher."""
    for key, patterns in specs:
        if any(p.match(name) for p in patterns):
            return key
    return None


def block_groups(backbone: Backbone) -> BlockGroups:
    """Split the parameters by timm's `group_matcher(coarse=True)`: the stem group, then blocks, then the rest."""
    model = backbone.model
    try:
        matcher = model.group_matcher(coarse=True)
    except (AttributeError, AssertionError, NotImplementedError):
        raise UserError("--freeze-blocks", f"timm defines no block grouping for {backbone.timm_name}",
                        "leave out --freeze-blocks to fine-tune all of it") from None
    group_of = group_parameters(model, matcher, reverse=True)  # name → ordinal of its group, input to output
    names = [name for name, _ in model.named_parameters()]
    if isinstance(matcher, dict):
        # A spec is a regex or a list of (regex, ordinal suffix) pairs; None means the model lacks that part.
        specs = [(key, [re.compile(s[0]) for s in (spec if isinstance(spec, list | tuple) else [(spec, None)])])
                 for key, spec in matcher.items() if spec is not None]
        keys = {name: _first_match(name, specs) for name in names}
    else:  # a callable matcher says nothing about parts: its first group is taken as the stem
        first = min(group_of.values())
        keys = {name: "stem" if group_of[name] == first else "blocks" for name in names}
    stem = [name for name in names if keys[name] == "stem"]
    tail = [name for name in names if keys[name] is None]
    # Ordinals, not keys, delimit blocks: timm merges some matches into the previous group (ViT norm, DenseNet
    # transition layers) and multi-key matchers (XCiT's cls_attn_blocks, SelecSLS's blocks_head) add more blocks.
    ordinals = sorted({group_of[name] for name in names if keys[name] not in ("stem", None)})
    blocks = [[name for name in names if keys[name] not in ("stem", None) and group_of[name] == ordinal]
              for ordinal in ordinals]
    return BlockGroups(stem, blocks, tail)


def count_blocks(backbone: Backbone) -> int:
    """How many blocks `freeze_blocks` counts: resnet 4, densenet 4, vgg16 12 (conv layers), ViT its depth."""
    return len(block_groups(backbone).blocks)


def check_freeze_blocks(backbone: Backbone, n: int) -> BlockGroups:
    """The backbone's block groups, once `n` is a number of them it has: 0 (head only) to all of them."""
    groups = block_groups(backbone)
    total = len(groups.blocks)
    if not 0 <= n <= total:
        raise UserError(f"--freeze-blocks {n}", "is negative" if n < 0 else f"is more than the {total} blocks",
                        f"{backbone.timm_name} has {total} blocks: give 0 (train only the head) to {total} (train all)")
    return groups


def freeze_blocks(backbone: Backbone, n: int) -> list[str]:
    """Freeze everything before the last `n` blocks (stem included); n = the block count freezes nothing.

    Only switches `requires_grad` off: parameters after the frozen ones keep their flags. The tail (neck,
    pre-logits) is never frozen. Returns the frozen parameters' timm names (without the `model.` prefix).
    """
    groups = check_freeze_blocks(backbone, n)
    total = len(groups.blocks)
    if n == total:
        return []
    frozen = groups.stem + [name for block in groups.blocks[:total - n] for name in block]
    params = dict(backbone.model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    return frozen


def frozen_norm_eval(model: nn.Module) -> int:
    """Put BatchNorm layers whose parameters are all frozen in eval mode; call after `model.train()`.

    A frozen block whose BatchNorm still updates running statistics drifts from its weights. Layers without
    affine parameters are left alone: nothing says whether they belong to a frozen block. Returns how many.
    """
    count = 0
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if isinstance(module, _BatchNorm) and params and not any(p.requires_grad for p in params):
            module.eval()
            count += 1
    return count


def lora_targets(backbone: Backbone) -> list[str]:
    """Names of the attention projection Linears LoRA adapts (e.g. `blocks.0.attn.qkv`, `blocks.0.attn.proj`)."""
    return [name for name, module in backbone.model.named_modules()
            if isinstance(module, nn.Linear) and _ATTN_LINEAR.fullmatch(name)]


def check_lora_targets(backbone: Backbone) -> list[str]:
    """LoRA's target modules, once the backbone is known to have some (ViT attention)."""
    targets = lora_targets(backbone)
    if not targets:
        raise UserError("--lora-rank", f"LoRA applies to ViT attention layers; {backbone.timm_name} has none",
                        "use --freeze-blocks for CNNs")
    return targets


def import_peft() -> ModuleType:
    """The peft package, which LoRA needs; missing, a UserError naming the extra to install."""
    try:  # peft imports transformers (seconds): only LoRA runs pay for it
        import peft
    except ImportError:
        raise UserError("--lora-rank", "needs the peft package", "pip install 'medtransfer[lora]'") from None
    return peft


def add_lora(backbone: Backbone, rank: int, alpha: float | None = None, dropout: float = 0.0) -> int:
    """Inject LoRA adapters into the attention projections and freeze every other backbone weight.

    `alpha` defaults to `rank` (update scale alpha/rank = 1). The model is modified in place, so
    `backbone.forward` and `forward_features` are unchanged. Returns the number of trainable LoRA parameters.
    """
    if rank < 1:
        raise UserError(f"--lora-rank {rank}", "must be 1 or more", "e.g. --lora-rank 8")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"--lora-dropout {dropout}", "must be in [0, 1)", "e.g. --lora-dropout 0.1")
    if hasattr(backbone.model, "peft_config"):
        raise ValueError(f"{backbone.timm_name} already has LoRA adapters")
    targets = check_lora_targets(backbone)
    peft = import_peft()
    config = peft.LoraConfig(r=rank, lora_alpha=float(rank if alpha is None else alpha), lora_dropout=dropout,
                             target_modules=targets, bias="none")
    # In place: the timm model stays the timm model (a PeftModel wrapper would hide forward_features).
    peft.inject_adapter_in_model(config, backbone.model)
    return sum(p.numel() for p in backbone.model.parameters() if p.requires_grad)


def merge_lora(backbone: Backbone) -> None:
    """Fold the LoRA updates into the base weights and drop the adapters: `state_dict()` has plain timm keys again.

    No-op without adapters. Parameters keep their `requires_grad` flags (the base weights stay frozen).
    """
    if "peft" not in sys.modules:  # nothing can have been injected
        return
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = backbone.model
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def enable_grad_checkpointing(backbone: Backbone) -> None:
    """Recompute block activations in the backward pass (timm's `set_grad_checkpointing`): less memory, ~30% slower."""
    setter = getattr(backbone.model, "set_grad_checkpointing", None)
    try:
        if setter is None:
            raise NotImplementedError
        setter(True)
    except (AssertionError, NotImplementedError):  # timm asserts where a family does not support it (VGG)
        raise UserError("--grad-checkpointing", f"timm does not support it for {backbone.timm_name}",
                        "leave it out, or lower --batch-size to save memory") from None
