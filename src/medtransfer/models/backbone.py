"""A backbone: a timm model, its preprocessing from timm's pretrained config, and its feature pooling."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.data import resolve_data_config
from torch import nn

from medtransfer.errors import UserError
from medtransfer.models.catalog import resolve
from medtransfer.models.weights import create_imagenet, load_checkpoint


@dataclass(frozen=True)
class Preprocess:
    """Input pipeline taken from the backbone's timm pretrained config, with the run's input size."""

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
    """Image batch → one feature vector per image, pooled the way the family is probed."""

    def __init__(self, model: nn.Module, pooling: str, timm_name: str, preprocess: Preprocess) -> None:
        super().__init__()
        self.model, self.timm_name, self.preprocess = model, timm_name, preprocess
        self.tokens = hasattr(model, "num_prefix_tokens")  # ViT-style: token sequence out of forward_features
        if pooling == "auto":
            pooling = "cls_mean" if self.tokens else "avg"
        if self.tokens == (pooling == "avg"):
            kinds = "cls_mean, cls or mean" if self.tokens else "avg"
            raise UserError(f"--pooling {pooling}", f"does not apply to {timm_name}", f"use {kinds}")
        self.pooling = pooling
        width = getattr(model, "head_hidden_size", None) or model.num_features  # VGG's pre-logits are 4096 wide
        self.num_features = width * (2 if pooling == "cls_mean" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features: DINOv2-style class token ⊕ mean patch token, or global average pooling."""
        if not self.tokens:
            return self.model(x)  # num_classes=0: timm returns globally pooled features
        tokens = self.model.forward_features(x)
        cls, patches = tokens[:, 0], tokens[:, self.model.num_prefix_tokens:]  # registers are skipped
        if self.pooling == "cls":
            return cls
        if self.pooling == "mean":
            return patches.mean(dim=1)
        return torch.cat([cls, patches.mean(dim=1)], dim=1)


def _patch_size(model: nn.Module) -> int | None:
    embed = getattr(model, "patch_embed", None)
    return int(embed.patch_size[0]) if embed is not None else None


def create_model(timm_name: str, weights: str, image_size: int | None, seed: int | None) -> nn.Module:
    """Build the timm model; transformers get `img_size` so their position embeddings fit the input.

    `seed` None draws no seed: for a model on the meta device, which holds no values.
    """
    attempts = [{"num_classes": 0, "img_size": image_size}] if image_size else []
    attempts.append({"num_classes": 0})
    for kwargs in attempts:
        if seed is not None:
            torch.manual_seed(seed)  # `none` weights are reproducible from the run's seed
        try:
            if weights == "imagenet":
                return create_imagenet(timm_name, **kwargs)
            return timm.create_model(timm_name, pretrained=False, **kwargs)
        except TypeError:  # CNN constructors take no img_size
            continue
        except (AssertionError, ValueError) as exc:
            raise UserError(f"--backbone {timm_name}", f"cannot be built at this size ({exc})",
                            "change --image-size") from None
    raise UserError(f"--backbone {timm_name}", "timm cannot build it", "pick another backbone")


def input_size(model: nn.Module) -> int:
    """The model's default input size, from its timm pretrained config."""
    return int(resolve_data_config({}, model=model)["input_size"][-1])


def build_backbone(name: str, weights: str, image_size: int | None, pooling: str = "auto", seed: int = 0) -> Backbone:
    """Create the backbone with its weights (imagenet, none, or a local file) at the run's input size."""
    entry = resolve(name)
    cfg = timm.models.get_pretrained_cfg(entry.timm_name)
    model = create_model(entry.timm_name, weights, image_size, seed)
    if weights not in ("imagenet", "none"):
        load_checkpoint(model, Path(weights), cfg.classifier if cfg else None)
    return wrap_model(model, name, entry.timm_name, image_size, pooling)


def check_patch_size(model: nn.Module, name: str, image_size: int | None) -> None:
    """A ViT's input size must be a multiple of its patch size."""
    patch = _patch_size(model)
    if image_size is not None and patch and image_size % patch:
        raise UserError(f"--image-size {image_size}", f"is not a multiple of {name}'s patch size {patch}",
                        f"use a multiple of {patch}, e.g. {max(patch, round(image_size / patch) * patch)}")


def wrap_model(model: nn.Module, name: str, timm_name: str, image_size: int | None, pooling: str) -> Backbone:
    """The Backbone around a built timm model: its size and pooling checked, preprocessing from its timm config."""
    check_patch_size(model, name, image_size)
    data_cfg = resolve_data_config({}, model=model)
    size = image_size or int(data_cfg["input_size"][-1])  # input_size(model), without resolving twice
    preprocess = Preprocess(size, tuple(data_cfg["mean"]), tuple(data_cfg["std"]), data_cfg["interpolation"],
                            float(data_cfg["crop_pct"]))
    return Backbone(model, pooling, timm_name, preprocess)


@functools.lru_cache(maxsize=64)
def meta_backbone(name: str, image_size: int | None, pooling: str = "auto") -> Backbone:
    """The backbone as `build_backbone` makes it, on the meta device: every shape, name, preprocessing and check,
    and no weights read or drawn, so a study can check all of its backbones in seconds. Do not modify it (cached)."""
    entry = resolve(name)
    try:
        with torch.device("meta"):
            model = create_model(entry.timm_name, "none", image_size, None)
    except (RuntimeError, NotImplementedError):  # a constructor that computes with tensor values (`.item()`)
        model = create_model(entry.timm_name, "none", image_size, None)
    return wrap_model(model, name, entry.timm_name, image_size, pooling)
