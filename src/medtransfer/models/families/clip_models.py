"""The open_clip family: built-in model configs (`open_clip:NAME[@TAG]`) and hub models in open_clip's layout
(`open_clip:hf-hub:ORG/NAME[@REV]`). Only the image tower is built, with open_clip's own builder; the weights are
the checkpoint's `visual.*` tensors, loaded strictly, and the rest must be the text tower's."""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import open_clip
import torch
from open_clip.model import _build_vision_tower, resize_pos_embed
from open_clip.modified_resnet import ModifiedResNet
from open_clip.timm_model import TimmModel
from open_clip.transform import PreprocessCfg, merge_preprocess_dict
from torch import nn

from medtransfer.config import WEIGHT_KEYWORDS
from medtransfer.errors import UserError
from medtransfer.hashing import json_digest
from medtransfer.models import hub
from medtransfer.models.backbone import Backbone, Preprocess, check_patch_size, on_meta
from medtransfer.models.blocks import BlockGroups, layer_list_groups, linear_names, timm_block_groups
from medtransfer.models.catalog import BackboneSpec
from medtransfer.models.weights import file_identity, load_strict, read_state_dict

_CONFIG_FILE = "open_clip_config.json"
# What open_clip's hub loader reads, in its order (pretrained.py: the safetensors alternative first).
_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# A CLIP checkpoint's keys outside `visual.`: the text tower (CLIP's flat layout or CustomTextCLIP's `text.`), the
# logit scale/bias, and CoCa's text decoder. Any other key is refused: it could be image weights we would drop.
_TEXT_KEYS = ("text.", "transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection",
              "logit_scale", "logit_bias", "attn_mask", "text_decoder.")
# timm's attention projections inside a TimmModel tower's trunk (as the timm family targets them).
_TIMM_ATTN = re.compile(r"trunk\.(?:.*\.)?attn\.(?:qkv|q_proj|k_proj|v_proj|q|k|v|kv|proj)")
# A VisionTransformer's parameters before its blocks; everything else outside the blocks (ln_post, proj,
# attn_pool) is after them, though `proj` is registered first.
_VIT_STEM = ("conv1", "class_embedding", "positional_embedding", "ln_pre")
# The run's image pipeline resizes the short side and centre-crops: open_clip's "shortest" mode.
_RESIZE_MODES = ("shortest",)
_INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class _Source:
    """Where a model's config and pretrained weights come from."""

    model_cfg: dict
    preprocess_cfg: dict
    weights: tuple[str, tuple[str, ...], str | None] | None  # (hub repo, candidate files, revision)
    url: str | None  # a built-in tag published only as a URL
    tag: str | None
    notes: tuple[str, ...]


class ClipBackbone(Backbone):
    """An open_clip image tower: the CLIP image embedding (`proj`) or the pooled features before the projection."""

    family = "open_clip"

    def __init__(self, model: nn.Module, spec: BackboneSpec, preprocess: Preprocess, pooling: str,
                 weights_id: str, notes: list[str], embed_dim: int) -> None:
        self._embed_dim = embed_dim  # a plain int: nn.Module allows it before its __init__
        super().__init__(model, spec, preprocess, pooling, weights_id, notes)

    def poolings(self) -> tuple[str, ...]:
        if isinstance(self.model, ModifiedResNet) or (isinstance(self.model, TimmModel)
                                                      and hasattr(self.model.head, "pool")):
            return ("proj",)  # attention pooling projects as it pools: no features before the projection
        return ("proj", "pre_proj")

    def width(self) -> int:
        if self.pooling == "proj":
            return self._embed_dim
        if isinstance(self.model, TimmModel):
            return int(self.model.trunk.num_features)
        return int(self.model.proj.shape[0])  # the pooled token (the attentional pooler's width where it has one)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`encode_image` (unnormalised) for `proj`; the same pass stopped before the projection for `pre_proj`."""
        if self.pooling == "proj":
            out = self.model(x)
            return out[0] if isinstance(out, tuple) else out  # output_tokens towers return (pooled, tokens)
        if isinstance(self.model, TimmModel):
            trunk = self.model.trunk
            return trunk.forward_head(trunk.forward_features(x), pre_logits=True)
        tower = self.model  # VisionTransformer.forward up to `pooled @ proj`, through its own steps
        pooled, _ = tower._pool(tower.transformer(tower._embeds(x)))
        return pooled

    def block_groups(self) -> BlockGroups:
        if isinstance(self.model, TimmModel):
            trunk = timm_block_groups(self.model.trunk, self.name)
            head = [f"head.{name}" for name, _ in self.model.head.named_parameters()]
            return BlockGroups([f"trunk.{n}" for n in trunk.stem], [[f"trunk.{n}" for n in b] for b in trunk.blocks],
                               [f"trunk.{n}" for n in trunk.tail] + head)
        if isinstance(self.model, ModifiedResNet):
            names = [name for name, _ in self.model.named_parameters()]
            blocks = [[n for n in names if n.startswith(f"layer{i}.")] for i in range(1, 5)]
            return BlockGroups([n for n in names if n.split(".")[0][:-1] in ("conv", "bn")], blocks,
                               [n for n in names if n.startswith("attnpool.")])
        groups = layer_list_groups(self.model, self.name)  # transformer.resblocks
        outside = groups.stem + groups.tail
        return BlockGroups([n for n in outside if n.split(".")[0] in _VIT_STEM], groups.blocks,
                           [n for n in outside if n.split(".")[0] not in _VIT_STEM])

    def lora_targets(self) -> list[str]:
        if isinstance(self.model, TimmModel):
            return linear_names(self.model, _TIMM_ATTN)
        if isinstance(self.model, ModifiedResNet):
            # Its attention pool calls F.multi_head_attention_forward with the Linears' weights, never their
            # forward: an adapter there would be ignored.
            return []
        # open_clip's blocks use nn.MultiheadAttention, which reads in_proj_weight and out_proj.weight directly, so
        # LoRA on `attn.out_proj` alone would never run. peft wraps the whole nn.MultiheadAttention (qkv in_proj and
        # out_proj together), which add_lora does; adapt.merge_lora unloads it with peft's own step.
        return [name for name, module in self.model.named_modules() if isinstance(module, nn.MultiheadAttention)]

    def set_grad_checkpointing(self) -> None:
        if isinstance(self.model, ModifiedResNet):  # open_clip's switch there is a no-op
            raise UserError("--grad-checkpointing", f"open_clip does not support it for {self.name}'s ResNet tower",
                            "leave it out, or lower --batch-size to save memory")
        if isinstance(self.model, TimmModel):  # TimmModel's own switch only logs a warning where timm cannot
            try:
                self.model.trunk.set_grad_checkpointing(True)
            except (AssertionError, NotImplementedError, AttributeError):
                raise UserError("--grad-checkpointing", f"timm does not support it for {self.name}'s trunk",
                                "leave it out, or lower --batch-size to save memory") from None
            return
        self.model.set_grad_checkpointing(True)




def _read_config(path: Path, spec: BackboneSpec) -> dict:
    """open_clip_config.json with a model_cfg holding embed_dim and vision_cfg."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"--backbone {spec.name}", f"cannot read {path} ({type(exc).__name__})",
                        "check that the hub repo is an open_clip model") from None
    model_cfg = config.get("model_cfg") if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict) or not {"embed_dim", "vision_cfg"} <= model_cfg.keys():
        raise UserError(f"--backbone {spec.name}", f"{_CONFIG_FILE} has no model_cfg with embed_dim and vision_cfg",
                        "check that the hub repo is an open_clip model (open_clip's hub layout)")
    return config


def _hub_source(spec: BackboneSpec, repo: str, weights: str) -> _Source:
    """An `hf-hub:` model: its open_clip_config.json, or the catalog's embedded architecture where no weights are
    wanted from the hub and the config is not cached."""
    arch = spec.entry.architecture if spec.entry is not None else {}
    files = (repo, _WEIGHT_FILES, spec.revision)
    cached = hub.cached_file(repo, (_CONFIG_FILE,), spec.revision)
    if weights != "pretrained" and cached is None and arch.get("model_cfg"):
        return _Source(arch["model_cfg"], arch.get("preprocess_cfg", {}), files, None, None,
                       ("config: the catalog's architecture (the hub's open_clip_config.json is not cached)",))
    path = cached or hub.download(repo, _CONFIG_FILE, spec.revision, f"--backbone {spec.name}", spec.gated)
    config = _read_config(path, spec)
    note = f"config: {_CONFIG_FILE} of {hub.identity(repo, path, spec.revision)}"
    return _Source(config["model_cfg"], config.get("preprocess_cfg") or {}, files, None, None, (note,))


def _tag(spec: BackboneSpec, name: str, weights: str) -> str | None:
    """The pretrained tag: the one asked for, or the model's only one; several without a choice are refused."""
    tags = open_clip.list_pretrained_tags_by_model(name)
    if spec.revision is not None:
        if spec.revision not in tags:
            raise UserError(f"--backbone {spec.name}", f"open_clip has no pretrained tag {spec.revision!r} for {name}",
                            f"use one of: {', '.join(tags)}" if tags else f"{name} has no pretrained weights in "
                            "open_clip: use --weights none or a checkpoint file")
        return spec.revision
    if weights != "pretrained":
        return None
    if not tags:
        raise UserError(f"--backbone {spec.name} --weights pretrained", f"open_clip has no pretrained weights for "
                        f"{name}", "use --weights none or pass --weights PATH to a checkpoint file")
    if len(tags) > 1:
        raise UserError(f"--backbone {spec.name} --weights pretrained", f"open_clip has {len(tags)} pretrained tags "
                        f"for {name}", f"name one: open_clip:{name}@TAG with TAG one of {', '.join(tags)}")
    return tags[0]


def _builtin_source(spec: BackboneSpec, weights: str) -> _Source:
    """A built-in model config, with its pretrained tag's preprocessing and hub file from open_clip's registry."""
    name = spec.model_id.replace("/", "-")  # as open_clip's create_model cleans the name
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        near = difflib.get_close_matches(name, open_clip.list_models(), n=3, cutoff=0.6)
        raise UserError(f"--backbone {spec.name}", "is not one of open_clip's model configs",
                        f"did you mean {', '.join(near)}?" if near else "see open_clip.list_models(), or use "
                        "open_clip:hf-hub:ORG/NAME")
    tag = _tag(spec, name, weights)
    if tag is None:
        return _Source(model_cfg, {}, None, None, None, (f"config: open_clip's built-in {name}",))
    pcfg = open_clip.get_pretrained_cfg(name, tag)
    if bool(pcfg.get("quick_gelu", False)) != bool(model_cfg.get("quick_gelu", False)):
        fix = f"use open_clip:{name}-quickgelu@{tag}" if pcfg.get("quick_gelu") else "use a config without QuickGELU"
        raise UserError(f"--backbone {spec.name}", f"tag {tag} was trained with quick_gelu={pcfg.get('quick_gelu')} "
                        f"and the {name} config has quick_gelu={model_cfg.get('quick_gelu', False)}", fix)
    source, url = None, None
    if pcfg.get("hf_hub"):
        # open_clip's convention: `org/model/` names the default file, `org/model/FILE` a file of its own.
        repo, filename = os.path.split(pcfg["hf_hub"])
        files = _WEIGHT_FILES if not filename else tuple(dict.fromkeys(
            ([filename[:-4] + ".safetensors"] if filename.endswith((".bin", ".pth")) else []) + [filename]))
        source = (repo, files, None)
    elif pcfg.get("url"):
        url = pcfg["url"]
    return _Source(model_cfg, pcfg, source, url, tag, (f"config: open_clip's built-in {name}, tag {tag}",))


def _source(spec: BackboneSpec, weights: str) -> _Source:
    repo = spec.hub_repo
    return _hub_source(spec, repo, weights) if repo is not None else _builtin_source(spec, weights)


def _vision_cfg_sha(model_cfg: dict) -> str:
    """A short sha of what builds the image tower (embed_dim, vision_cfg, quick_gelu)."""
    return json_digest({k: model_cfg.get(k) for k in ("embed_dim", "vision_cfg", "quick_gelu")}, 12)


def _pretrained_identity(spec: BackboneSpec, source: _Source) -> str:
    """`hub:REPO@COMMIT` for a hub model; `open_clip:NAME:TAG` (and the cached file's commit) for a built-in tag."""
    cached = hub.cached_file(*source.weights) if source.weights is not None else None
    if spec.hub_repo is not None:
        repo, _, revision = source.weights
        return hub.identity(repo, cached, revision)
    commit = hub.commit_of(cached) if cached is not None else None
    return f"open_clip:{spec.model_id}:{source.tag}" + (f"@{commit}" if commit else "")


def _identity(spec: BackboneSpec, weights: str, seed: int | None, source: _Source) -> str:
    if weights not in WEIGHT_KEYWORDS:
        return file_identity(Path(weights))
    if weights == "none":
        return f"none:seed={seed}:{_vision_cfg_sha(source.model_cfg)}"
    return _pretrained_identity(spec, source)


def weights_identity(spec: BackboneSpec, weights: str, seed: int | None) -> str:
    """`hub:REPO@COMMIT`, `open_clip:NAME:TAG`, `file:SHA256`, or the seed of `none` with the tower config's sha."""
    if weights not in WEIGHT_KEYWORDS:
        return file_identity(Path(weights))
    return _identity(spec, weights, seed, _source(spec, weights))


def available_offline(spec: BackboneSpec) -> bool:
    """Whether the pretrained weights (and a hub model's config) are already in the local Hugging Face cache."""
    repo = spec.hub_repo
    if repo is not None:
        return (hub.cached_file(repo, (_CONFIG_FILE,), spec.revision) is not None
                and hub.cached_file(repo, _WEIGHT_FILES, spec.revision) is not None)
    try:
        source = _builtin_source(spec, "pretrained")
    except UserError:
        return False
    return source.weights is not None and hub.cached_file(*source.weights) is not None


def _square(value: object, what: str, spec: BackboneSpec) -> int:
    """An image size that open_clip may give as an int or a pair: square only."""
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise UserError(f"--backbone {spec.name}", f"has a non-square {what} {tuple(value)}",
                            "this tool feeds square images: pick a square model")
        value = value[0]
    return int(value)


def _preprocess(source: _Source, spec: BackboneSpec, size: int) -> Preprocess:
    """open_clip's preprocess config (its defaults under the model's), as the run's resize-short-side-and-crop."""
    cfg = merge_preprocess_dict(asdict(PreprocessCfg()), source.preprocess_cfg)
    if cfg["resize_mode"] not in _RESIZE_MODES:
        raise UserError(f"--backbone {spec.name}", f"open_clip preprocesses it with resize_mode "
                        f"{cfg['resize_mode']!r}, which this tool's resize-short-side-and-centre-crop pipeline does "
                        "not reproduce", "pick a model whose preprocess_cfg has resize_mode 'shortest'")
    if cfg["interpolation"] not in _INTERPOLATIONS:
        raise UserError(f"--backbone {spec.name}", f"open_clip preprocesses it with {cfg['interpolation']!r} "
                        "interpolation", f"pick a model that uses {' or '.join(_INTERPOLATIONS)}")
    mean, std = tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
    if len(mean) != 3 or len(std) != 3:
        raise UserError(f"--backbone {spec.name}", "has a preprocess mean/std that is not per RGB channel",
                        "pick an RGB model")
    return Preprocess(size, mean, std, cfg["interpolation"], 1.0)  # open_clip crops the resized short side: 1.0


def _tower(model_cfg: dict, spec: BackboneSpec, size: int, seed: int | None, meta: bool) -> nn.Module:
    """The image tower by open_clip's own builder; a VisionTransformer is built at the run's size (as
    `force_image_size` does), a timm trunk is resized after loading, a ModifiedResNet only runs at its own size."""
    vision_cfg = dict(model_cfg["vision_cfg"])
    native = _square(vision_cfg.get("image_size", 224), "image_size", spec)
    if vision_cfg.get("timm_model_name"):
        vision_cfg["timm_model_pretrained"] = False  # the weights come from the CLIP checkpoint, never timm's
    elif isinstance(vision_cfg.get("layers"), list | tuple):
        if size != native:  # its attention pool's position embedding is sized for one input
            raise UserError(f"--image-size {size}", f"{spec.name}'s ResNet tower runs at {native} px only",
                            f"use --image-size {native}")
    else:
        check_patch_size(_square(vision_cfg.get("patch_size", 16), "patch_size", spec), spec.name, size)
        vision_cfg["image_size"] = size

    def build() -> nn.Module:
        return _build_vision_tower(int(model_cfg["embed_dim"]), vision_cfg, bool(model_cfg.get("quick_gelu")))

    if seed is not None:
        torch.manual_seed(seed)  # `none` weights are reproducible from the run's seed
    try:
        return on_meta(build) if meta else build()
    except (AssertionError, ValueError, TypeError, RuntimeError) as exc:
        raise UserError(f"--backbone {spec.name}", f"open_clip cannot build its image tower ({exc})",
                        "check the model config's vision_cfg") from None


def _is_text(key: str) -> bool:
    return key.startswith(_TEXT_KEYS)


def _load(tower: nn.Module, path: Path, spec: BackboneSpec, notes: list[str]) -> None:
    """The checkpoint's image tower, strictly: a CLIP state dict's `visual.*` (every other key the text tower's)
    or a bare tower state dict, with the position embedding resized to the tower's grid as open_clip does."""
    state = read_state_dict(path, notes)
    if any(k.startswith("visual.") for k in state):
        others = [k for k in state if not k.startswith("visual.")]
        foreign = [k for k in others if not _is_text(k)]
        if foreign:
            raise UserError(str(path), f"has {len(foreign)} key(s) that are neither the image tower's (visual.*) nor "
                            f"the text tower's ({', '.join(foreign[:4])})", "pass an open_clip CLIP checkpoint or "
                            "the image tower's own state dict")
        if others:
            notes.append(f"{Path(path).name}: left out {len(others)} text-tower tensors ({others[0]}, …): "
                         "only the image tower is built")
        state = {k: v for k, v in state.items() if k.startswith("visual.")}
    else:
        notes.append(f"{Path(path).name}: read as the image tower's own state dict (no visual. keys)")
        state = {f"visual.{k}": v for k, v in state.items()}
    resize_pos_embed(state, SimpleNamespace(visual=tower))  # open_clip's resampling, for a run at another size
    load_strict(tower, {k.removeprefix("visual."): v for k, v in state.items()}, str(path),
                "pass a checkpoint of the same open_clip model (its visual.* keys or the image tower's state dict)",
                what=f"the image tower of {spec.name}")


def _fetch(spec: BackboneSpec, source: _Source) -> Path:
    """The pretrained weight file from the hub cache or a download (every failure one line)."""
    if source.weights is not None:
        repo, files, revision = source.weights
        return hub.first_download(repo, files, revision, f"--backbone {spec.name} --weights pretrained",
                                  spec.gated, "pass --weights PATH to a local open_clip checkpoint")
    if source.url is None:
        raise UserError(f"--backbone {spec.name} --weights pretrained", "open_clip names no file for this tag",
                        "pass --weights PATH to a local open_clip checkpoint")
    if hub.offline():
        raise UserError(f"--backbone {spec.name} --weights pretrained", f"open_clip publishes tag {source.tag} only "
                        f"as a URL ({source.url}) and HF_HUB_OFFLINE is set", "download it where there is network "
                        "and pass --weights PATH to the file")
    from open_clip.pretrained import download_pretrained_from_url

    try:
        return Path(download_pretrained_from_url(source.url))
    except Exception as exc:  # network or checksum failures: one line
        raise UserError(f"--backbone {spec.name} --weights pretrained", f"cannot download {source.url} "
                        f"({type(exc).__name__})", "download it elsewhere and pass --weights PATH to the file") from None


def build(spec: BackboneSpec, weights: str, image_size: int | None, pooling: str, seed: int | None,
          meta: bool = False) -> ClipBackbone:
    """Create the open_clip image tower with its weights (pretrained, none, or a local checkpoint file)."""
    source = _source(spec, weights if not meta else "none")
    notes = list(source.notes)
    native = _square(source.model_cfg["vision_cfg"].get("image_size", 224), "image_size", spec)
    size = image_size or native
    preprocess = _preprocess(source, spec, size)  # refuses what the pipeline cannot do before any download
    path = None
    if not meta and weights == "pretrained":
        path = _fetch(spec, source)
    elif not meta and weights not in WEIGHT_KEYWORDS:
        path = Path(weights)
    tower = _tower(source.model_cfg, spec, size, seed if weights == "none" or meta else None, meta)
    if path is not None:
        _load(tower, path, spec, notes)
    if isinstance(tower, TimmModel):
        _fit_trunk(tower, spec, size)
    identity = "meta" if meta else _identity(spec, weights, seed, source)
    if not meta and weights == "pretrained":
        notes.append(f"weights: {path.name} of {identity}")
    return ClipBackbone(tower, spec, preprocess, pooling, identity, notes, int(source.model_cfg["embed_dim"]))


def _fit_trunk(tower: TimmModel, spec: BackboneSpec, size: int) -> None:
    """A timm ViT trunk at the run's size: open_clip's set_input_size (timm resamples the position embedding)."""
    embed = getattr(tower.trunk, "patch_embed", None)
    if embed is None or tuple(embed.img_size) == (size, size):
        return
    patch = embed.patch_size[0] if isinstance(embed.patch_size, tuple) else embed.patch_size
    check_patch_size(int(patch), spec.name, size)
    tower.set_input_size(size)
