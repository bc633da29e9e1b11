"""A backbone's parameters in block groups, input to output, for `--freeze-blocks`: timm's own grouping for timm
models, and the encoder's layer list for the others."""

from __future__ import annotations

import re
from dataclasses import dataclass

from timm.models import group_parameters
from torch import nn

from medtransfer.errors import UserError


@dataclass(frozen=True)
class BlockGroups:
    """A backbone's parameter names (relative to `Backbone.model`) by block, input to output."""

    stem: list[str]  # patch/conv stem, position embedding, class and register tokens
    blocks: list[list[str]]  # one list per block; timm folds a final norm into the last block (ViT `norm`)
    tail: list[str]  # matched by no group: neck and pre-logits (DenseNet norm5, VGG pre_logits, ViT fc_norm)


def _first_match(name: str, specs: list[tuple[str, list[re.Pattern]]]) -> str | None:
    """The matcher key timm assigns `name` to: the first whose regex matches, as in timm's group_with_matcher."""
    for key, patterns in specs:
        if any(p.match(name) for p in patterns):
            return key
    return None


def timm_block_groups(model: nn.Module, name: str) -> BlockGroups:
    """Split a timm model's parameters by its `group_matcher(coarse=True)`: the stem group, then blocks, then the rest."""
    try:
        matcher = model.group_matcher(coarse=True)
    except (AttributeError, AssertionError, NotImplementedError):
        raise UserError("--freeze-blocks", f"timm defines no block grouping for {name}",
                        "leave out --freeze-blocks to fine-tune all of it") from None
    group_of = group_parameters(model, matcher, reverse=True)  # name → ordinal of its group, input to output
    names = [param for param, _ in model.named_parameters()]
    if isinstance(matcher, dict):
        # A spec is a regex or a list of (regex, ordinal suffix) pairs; None means the model lacks that part.
        specs = [(key, [re.compile(s[0]) for s in (spec if isinstance(spec, list | tuple) else [(spec, None)])])
                 for key, spec in matcher.items() if spec is not None]
        keys = {param: _first_match(param, specs) for param in names}
    else:  # a callable matcher says nothing about parts: its first group is taken as the stem
        first = min(group_of.values())
        keys = {param: "stem" if group_of[param] == first else "blocks" for param in names}
    stem = [param for param in names if keys[param] == "stem"]
    tail = [param for param in names if keys[param] is None]
    # Ordinals, not keys, delimit blocks: timm merges some matches into the previous group (ViT norm, DenseNet
    # transition layers) and multi-key matchers (XCiT's cls_attn_blocks, SelecSLS's blocks_head) add more blocks.
    ordinals = sorted({group_of[param] for param in names if keys[param] not in ("stem", None)})
    blocks = [[param for param in names if keys[param] not in ("stem", None) and group_of[param] == ordinal]
              for ordinal in ordinals]
    return BlockGroups(stem, blocks, tail)


def layer_list_groups(model: nn.Module, name: str) -> BlockGroups:
    """Blocks are the children of the model's largest layer list (a transformer encoder's layers, a ConvNeXt's
    stages); parameters registered before it are the stem (embeddings), after it the tail (final norm, pooler)."""
    lists = [(prefix, module) for prefix, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and len(module) >= 2
             and len({type(child) for child in module}) == 1]
    if not lists:
        raise UserError("--freeze-blocks", f"{name} has no list of layers to freeze block by block",
                        "leave out --freeze-blocks to fine-tune all of it")
    prefix, layers = max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))
    names = [param for param, _ in model.named_parameters()]
    blocks = [[param for param in names if param.startswith(f"{prefix}.{i}.")] for i in range(len(layers))]
    inside = {param for block in blocks for param in block}
    first = names.index(blocks[0][0]) if blocks[0] else 0
    stem = [param for param in names[:first] if param not in inside]
    tail = [param for param in names[first:] if param not in inside]
    return BlockGroups(stem, [block for block in blocks if block], tail)


def linear_names(model: nn.Module, pattern: re.Pattern) -> list[str]:
    """Names of the model's Linear layers whose full name matches `pattern` (LoRA's targets)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and pattern.fullmatch(name)]
