"""What of a backbone trains: the last n blocks, LoRA adapters on attention, and gradient checkpointing; each family
says what its blocks and attention projections are."""

from __future__ import annotations

import sys
from types import ModuleType

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medtransfer.errors import UserError
from medtransfer.models.backbone import Backbone
from medtransfer.models.blocks import BlockGroups

def block_groups(backbone: Backbone) -> BlockGroups:
    """The backbone's parameters by block, input to output, as its family groups them."""
    return backbone.block_groups()


def count_blocks(backbone: Backbone) -> int:
    """How many blocks `freeze_blocks` counts: resnet 4, densenet 4, vgg16 12 (conv layers), ViT its depth."""
    return len(block_groups(backbone).blocks)


def check_freeze_blocks(backbone: Backbone, n: int) -> BlockGroups:
    """The backbone's block groups, once `n` is a number of them it has: 0 (head only) to all of them."""
    groups = block_groups(backbone)
    total = len(groups.blocks)
    if not 0 <= n <= total:
        raise UserError(f"--freeze-blocks {n}", "is negative" if n < 0 else f"is more than the {total} blocks",
                        f"{backbone.name} has {total} blocks: give 0 (train only the head) to {total} (train all)")
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
    """Names of the attention modules LoRA adapts (timm `blocks.0.attn.qkv`; open_clip's whole MultiheadAttention)."""
    return backbone.lora_targets()


def check_lora_targets(backbone: Backbone) -> list[str]:
    """LoRA's target modules, once the backbone is known to have some (ViT attention)."""
    targets = lora_targets(backbone)
    if not targets:
        raise UserError("--lora-rank", f"LoRA applies to attention layers; {backbone.name} has none",
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
        raise ValueError(f"{backbone.name} already has LoRA adapters")
    targets = check_lora_targets(backbone)
    peft = import_peft()
    config = peft.LoraConfig(r=rank, lora_alpha=float(rank if alpha is None else alpha), lora_dropout=dropout,
                             target_modules=targets, bias="none")
    # In place: the timm model stays the timm model (a PeftModel wrapper would hide forward_features).
    peft.inject_adapter_in_model(config, backbone.model)
    return sum(p.numel() for p in backbone.model.parameters() if p.requires_grad)


def merge_lora(backbone: Backbone) -> None:
    """Fold the LoRA updates into the base weights and drop the adapters: `state_dict()` has the family's plain keys
    again.

    No-op without adapters. Parameters keep their `requires_grad` flags (the base weights stay frozen).
    """
    if "peft" not in sys.modules:  # nothing can have been injected
        return
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = backbone.model
    for name, module in list(model.named_modules()):
        if not isinstance(module, BaseTunerLayer):
            continue
        parent, _, child = name.rpartition(".")
        try:
            holder = model.get_submodule(parent)
        except AttributeError:  # inside an adapted layer already unloaded (nn.MultiheadAttention's out_proj)
            continue
        if hasattr(module, "unload_and_optionally_merge_module"):
            # peft's nn.MultiheadAttention layer (open_clip's ViT): merging swaps its weight Parameters for tensors;
            # peft's own unloading registers them again and unwraps its out_proj.
            base = module.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None)
        else:
            module.merge()
            base = module.get_base_layer()
        setattr(holder, child, base)
    if hasattr(model, "peft_config"):
        del model.peft_config


def enable_grad_checkpointing(backbone: Backbone) -> None:
    """Recompute block activations in the backward pass (the family's own switch): less memory, ~30% slower."""
    backbone.set_grad_checkpointing()
