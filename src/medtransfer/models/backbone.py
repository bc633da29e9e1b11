"""A backbone: a model of one family (timm, transformers, open_clip), its preprocessing from that family's own
config, its feature pooling, and what of it fine-tuning can freeze or adapt."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from medtransfer.errors import UserError
from medtransfer.models.catalog import BackboneSpec, resolve

if TYPE_CHECKING:
    from medtransfer.models.blocks import BlockGroups

@dataclass(frozen=True)
class Preprocess:
    """Input pipeline taken from the backbone family's own preprocessing config, with the run's input size."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float

    def as_dict(self) -> dict:
        """Plain types only (YAML and JSON friendly)."""
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "crop_pct": self.crop_pct}


class Backbone(nn.Module):
    """Image batch → one feature vector per image, pooled the way the family is probed.

    A family's subclass supplies its pooling choices, the feature width, the forward pass, the block groups that
    `--freeze-blocks` counts, LoRA's target modules and gradient checkpointing.
    """

    family: ClassVar[str] = ""

    def __init__(self, model: nn.Module, spec: BackboneSpec, preprocess: Preprocess, pooling: str,
                 weights_id: str, notes: list[str] | None = None) -> None:
        super().__init__()
        self.model, self.spec, self.preprocess, self.weights_id = model, spec, preprocess, weights_id
        self.notes = list(notes or [])  # how the weights were found and unwrapped, for the run's log
        choices = self.poolings()
        if pooling == "auto":  # the card's pooling where the catalog names one, else the family's first choice
            card = spec.entry.pooling if spec.entry else None
            pooling = card if card in choices else choices[0]
        if pooling not in choices:
            raise UserError(f"--pooling {pooling}", f"does not apply to {spec.name}", f"use {', '.join(choices)}")
        self.pooling = pooling
        self.num_features = self.width()

    @property
    def model_id(self) -> str:
        """The family's own name of the model (a timm name, a hub repo id or a local folder): in the cache key."""
        return self.spec.model_id

    @property
    def name(self) -> str:
        """The backbone as `--backbone` named it."""
        return self.spec.name

    def poolings(self) -> tuple[str, ...]:
        """The pooling choices that apply to this model, the family's default first."""
        raise NotImplementedError

    def width(self) -> int:
        """The pooled feature width."""
        raise NotImplementedError

    def block_groups(self) -> BlockGroups:
        """The parameters by block, input to output, for --freeze-blocks."""
        raise NotImplementedError

    def lora_targets(self) -> list[str]:
        """The attention modules LoRA adapts (names relative to `model`: Linears, or whole MultiheadAttention layers
        where the family's attention reads their weights directly); empty when it has none."""
        raise NotImplementedError

    def set_grad_checkpointing(self) -> None:
        """Recompute block activations in the backward pass; a UserError where the family cannot."""
        raise NotImplementedError


def _family(spec: BackboneSpec):
    from medtransfer.models.families import family_module

    return family_module(spec)


def build_backbone(name: str, weights: str, image_size: int | None, pooling: str = "auto", seed: int = 0) -> Backbone:
    """Create the backbone with its weights (pretrained, imagenet, none, or a local file) at the run's input size."""
    spec = resolve(name)
    return _family(spec).build(spec, weights, image_size, pooling, seed)


def weights_identity(name: str, weights: str, seed: int) -> str:
    """What makes two weight sources give the same features, without loading them: part of the feature-cache key
    (a hub model's commit as the cache holds it, a file's sha256, or the seed of `none`)."""
    spec = resolve(name)
    return _family(spec).weights_identity(spec, weights, seed)


def check_weights(name: str, weights: str) -> None:
    """`--weights` fits the backbone: a keyword or an existing checkpoint file; `imagenet` names timm's weights only."""
    from medtransfer.models.weights import check_weights_arg

    check_weights_arg(weights)
    spec = resolve(name)
    if weights == "imagenet" and spec.family != "timm":
        raise UserError("--weights imagenet", f"names timm's ImageNet weights, and {name} is a {spec.family} model",
                        "use --weights pretrained for its own published weights")
    if weights == "imagenet" and spec.entry is not None and spec.entry.weights_file is not None:
        raise UserError("--weights imagenet", f"{name}'s weights are its own checkpoint, not ImageNet's",
                        "use --weights pretrained, or --weights PATH to the checkpoint file")


def available_offline(name: str) -> bool:
    """Whether the backbone's pretrained weights are already in the local Hugging Face cache (or its local folder)."""
    spec = resolve(name)
    return _family(spec).available_offline(spec)


def catalog_rows() -> list[dict]:
    """Every catalog backbone as `medtransfer backbones` lists it: its family and model, its default input size and
    feature width (built on the meta device: no weights read, no network), licence, gated, and whether its weights
    are in the local cache."""
    from medtransfer.models.catalog import CATALOG, spelling

    rows = []
    for name, entry in CATALOG.items():
        model = spelling(entry)
        if entry.weights_file:
            model += f" + {'/'.join(entry.weights_file)}"
        row = {"name": name, "family": entry.family, "model": model, "note": entry.note,
               "licence": entry.licence, "gated": entry.gated}
        try:
            meta = meta_backbone(name, None)
            row |= {"input": meta.preprocess.size, "features": meta.num_features, "pooling": meta.pooling,
                    "offline": available_offline(name)}
        except UserError as exc:  # a family whose extra is missing: say which
            row |= {"input": None, "features": None, "pooling": None, "offline": False, "problem": exc.fix}
        rows.append(row)
    return rows


def check_patch_size(patch: int | None, name: str, image_size: int | None) -> None:
    """A ViT's input size must be a multiple of its patch size."""
    if image_size is not None and patch and image_size % patch:
        raise UserError(f"--image-size {image_size}", f"is not a multiple of {name}'s patch size {patch}",
                        f"use a multiple of {patch}, e.g. {max(patch, round(image_size / patch) * patch)}")


@functools.lru_cache(maxsize=64)
def meta_backbone(name: str, image_size: int | None, pooling: str = "auto") -> Backbone:
    """The backbone as `build_backbone` makes it, on the meta device: every shape, name, preprocessing and check,
    and no weights read or drawn, so a study can check all of its backbones in seconds. Do not modify it (cached)."""
    spec = resolve(name)
    return _family(spec).build(spec, "none", image_size, pooling, None, meta=True)


def on_meta(build, *args):
    """`build(*args)` on the meta device, or for real where a constructor computes with tensor values (`.item()`)."""
    try:
        with torch.device("meta"):
            return build(*args)
    except (RuntimeError, NotImplementedError):
        return build(*args)
