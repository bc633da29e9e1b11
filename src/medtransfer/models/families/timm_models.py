"""The timm family: registry names (`resnet50.tv_in1k`), hub models in timm's layout (`hf-hub:ORG/NAME[@REV]`) and
catalog checkpoints published outside timm (RETFound), with timm's data config as the preprocessing."""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch
from timm.data import resolve_data_config
from torch import nn

from medtransfer.config import WEIGHT_KEYWORDS
from medtransfer.errors import UserError
from medtransfer.models import hub
from medtransfer.models.backbone import Backbone, Preprocess, check_patch_size, on_meta
from medtransfer.models.blocks import BlockGroups, linear_names, timm_block_groups
from medtransfer.models.catalog import BackboneSpec
from medtransfer.models.weights import file_identity, load_checkpoint

# timm's attention projections: fused qkv + output proj (ViT, DINOv2, DeiT), split q/k/v (EVA, DINOv3), q + kv (PVT).
_ATTN_LINEAR = re.compile(r"(?:.*\.)?attn\.(?:qkv|q_proj|k_proj|v_proj|q|k|v|kv|proj)")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub loader reads, in its order
# A catalog entry built from another architecture's timm config (RETFound, UNI) states its card's preprocessing.
_CARD_PREPROCESS = ("mean", "std", "crop_pct", "interpolation")


class TimmBackbone(Backbone):
    """A timm model: global average pooling for CNNs; class token, mean patch token or both for ViTs."""

    family = "timm"

    @property
    def tokens(self) -> bool:
        """ViT-style: a token sequence out of forward_features."""
        return hasattr(self.model, "num_prefix_tokens")

    def poolings(self) -> tuple[str, ...]:
        return ("cls_mean", "cls", "mean") if self.tokens else ("avg",)

    def width(self) -> int:
        width = getattr(self.model, "head_hidden_size", None) or self.model.num_features  # VGG's pre-logits: 4096
        return width * (2 if self.pooling == "cls_mean" else 1)

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

    def block_groups(self) -> BlockGroups:
        return timm_block_groups(self.model, self.name)

    def lora_targets(self) -> list[str]:
        return linear_names(self.model, _ATTN_LINEAR)

    def set_grad_checkpointing(self) -> None:
        setter = getattr(self.model, "set_grad_checkpointing", None)
        try:
            if setter is None:
                raise NotImplementedError
            setter(True)
        except (AssertionError, NotImplementedError):  # timm asserts where a family does not support it (VGG)
            raise UserError("--grad-checkpointing", f"timm does not support it for {self.name}",
                            "leave it out, or lower --batch-size to save memory") from None



def weights_source(spec: BackboneSpec) -> tuple[str, tuple[str, ...], str | None] | None:
    """Where `pretrained` weights come from on the hub: (repo, candidate files, revision); None for a URL."""
    if spec.entry is not None and spec.entry.weights_file is not None:
        repo, filename = spec.entry.weights_file
        return repo, (filename,), spec.revision
    repo = spec.hub_repo
    if repo is not None:
        return repo, _WEIGHT_FILES, spec.revision
    cfg = timm.models.get_pretrained_cfg(spec.model_id)
    if cfg is None or not cfg.hf_hub_id:
        return None
    repo, _, revision = cfg.hf_hub_id.partition("@")
    return repo, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _WEIGHT_FILES, revision or None


def weights_identity(spec: BackboneSpec, weights: str, seed: int | None) -> str:
    """`hub:REPO@COMMIT` for hub weights (the commit the cache holds), `file:SHA256`, or the seed of `none`."""
    if weights == "none":
        return f"none:seed={seed}"
    if weights not in WEIGHT_KEYWORDS:
        return file_identity(Path(weights))
    source = weights_source(spec)
    if source is None:  # weights timm fetches from a URL: its version names them
        return f"timm:{spec.model_id}@{timm.__version__}"
    repo, files, revision = source
    ident = hub.identity(repo, hub.cached_file(repo, files, revision), revision)
    return ident + (f"/{files[0]}" if spec.entry is not None and spec.entry.weights_file else "")


def _layers(names: dict[str, str]) -> dict:
    """Constructor arguments a card passes as classes (Virchow2's SwiGLUPacked): timm layer names → the classes."""
    import timm.layers

    return {arg: getattr(timm.layers, value) if value[:1].isupper() else value for arg, value in names.items()}


def _create(spec: BackboneSpec, pretrained: bool, image_size: int | None, seed: int | None, meta: bool) -> nn.Module:
    """The timm model; ViTs get `img_size` so their position embeddings fit the input (CNN constructors take none).

    A `hf-hub:` catalog entry is built from its recorded architecture when the hub's config is not cached and no
    weights are wanted (the meta device, `--weights none`), so preflight needs no network.
    """
    arch = spec.entry.architecture if spec.entry is not None else {}
    repo = spec.hub_repo
    name, base = spec.model_id, dict(arch.get("kwargs", {}))
    base |= _layers(arch.get("layers", {}))
    if repo is not None:
        gated = spec.gated
        config = hub.cached_file(repo, ("config.json",), spec.revision)
        if not pretrained and arch.get("model") and config is None:
            name = arch["model"]
        else:
            if config is None:
                config = hub.download(repo, "config.json", spec.revision, f"--backbone {spec.name}", gated)
            # timm reads the snapshot folder itself (config.json, and the weights fetched beside it): the cached
            # commit, with no second trip to the hub.
            name = f"local-dir:{config.parent}"
            for key in arch.get("kwargs", {}):  # the hub's config.json sets these itself
                base.pop(key, None)
    attempts = [{**base, "num_classes": 0, "img_size": image_size}] if image_size else []
    attempts.append({**base, "num_classes": 0})
    for kwargs in attempts:
        if seed is not None:
            torch.manual_seed(seed)  # `none` weights are reproducible from the run's seed
        try:
            if meta:
                return on_meta(lambda: timm.create_model(name, pretrained=False, **kwargs))
            return timm.create_model(name, pretrained=pretrained, **kwargs)
        except TypeError:  # CNN constructors take no img_size
            continue
        except (AssertionError, ValueError) as exc:
            raise UserError(f"--backbone {spec.name}", f"cannot be built at this size ({exc})",
                            "change --image-size") from None
    raise UserError(f"--backbone {spec.name}", "timm cannot build it", "pick another backbone")


def _fetch_pretrained(spec: BackboneSpec) -> Path | None:
    """The pretrained weight file from the hub cache or a download (every failure one line); None where timm
    downloads from a URL itself."""
    source = weights_source(spec)
    if source is None:
        return None
    repo, files, revision = source
    return hub.first_download(repo, files, revision, f"--backbone {spec.name} --weights pretrained",
                              spec.gated,
                              "pass --weights PATH to a local .safetensors/.pth file")


def build(spec: BackboneSpec, weights: str, image_size: int | None, pooling: str, seed: int | None,
          meta: bool = False) -> TimmBackbone:
    """Create the timm backbone with its weights (pretrained/imagenet, none, or a local file)."""
    notes: list[str] = []
    published = weights in ("pretrained", "imagenet")
    outside = spec.entry is not None and spec.entry.weights_file is not None  # a checkpoint timm does not know
    fetched = _fetch_pretrained(spec) if published and not meta else None
    model = _create(spec, published and not outside, image_size, seed, meta)
    if not meta and (outside and published or weights not in WEIGHT_KEYWORDS):
        path = fetched if outside and published else Path(weights)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        load_checkpoint(model, path, cfg.get("classifier"), notes)
    identity = weights_identity(spec, weights, seed) if not meta else "meta"
    if fetched is not None:
        notes.append(f"weights: {fetched.name} of {identity}")
    return TimmBackbone(model, spec, _preprocess(model, spec, image_size), pooling, identity, notes)


def _preprocess(model: nn.Module, spec: BackboneSpec, image_size: int | None) -> Preprocess:
    """timm's data config of the model, at the run's input size (its default size when none is given)."""
    embed = getattr(model, "patch_embed", None)
    check_patch_size(int(embed.patch_size[0]) if embed is not None else None, spec.name, image_size)
    arch = spec.entry.architecture if spec.entry is not None else {}
    data_cfg = resolve_data_config({k: arch[k] for k in _CARD_PREPROCESS if k in arch}, model=model)
    size = image_size or int(data_cfg["input_size"][-1])
    return Preprocess(size, tuple(data_cfg["mean"]), tuple(data_cfg["std"]), data_cfg["interpolation"],
                      float(data_cfg["crop_pct"]))


def available_offline(spec: BackboneSpec) -> bool:
    """Whether the pretrained weights are already in the local Hugging Face cache."""
    source = weights_source(spec)
    return source is not None and hub.cached_file(*source) is not None
