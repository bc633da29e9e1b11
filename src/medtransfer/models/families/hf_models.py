"""The transformers family: vision models from the hub (`hf:ORG/NAME[@REV]`) or a local folder saved with
`save_pretrained` (`hf:/path`), with the image processor's `preprocessor_config.json` as the preprocessing.

Two-tower models (CLIP, SigLIP, MedSigLIP) contribute their vision tower only; weights load strictly, with only the
other tower and a classification head allowed to be left over.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from medtransfer.config import WEIGHT_KEYWORDS
from medtransfer.errors import UserError
from medtransfer.hashing import file_sha256, json_digest
from medtransfer.models import hub
from medtransfer.models.backbone import Backbone, Preprocess, check_patch_size, on_meta
from medtransfer.models.blocks import BlockGroups, layer_list_groups, linear_names
from medtransfer.models.catalog import BackboneSpec
from medtransfer.models.weights import file_identity, load_strict, read_state_dict

CONFIG, PREPROCESSOR, INDEX = "config.json", "preprocessor_config.json", "model.safetensors.index.json"
WEIGHT_FILES = ("model.safetensors", INDEX, "pytorch_model.bin")  # what from_pretrained reads, in its order
# PIL's resampling codes, as image processors store them, in the image pipeline's names.
_RESAMPLE = {2: "bilinear", 3: "bicubic"}
# Attention projections of every encoder layer: q/k/v + output (Dinov2, ViT, DINOv3: o_proj; CLIP/SigLIP: out_proj;
# older layouts: attention.attention.query|key|value + attention.output.dense). The index keeps SigLIP's pooling
# head (head.attention.out_proj) out: it is no encoder layer.
_ATTN_LINEAR = re.compile(r"(?:.*\.)?layers?\.\d+\.(?:attention\.(?:attention\.)?(?:q_proj|k_proj|v_proj|o_proj|query"
                          r"|key|value)|attention\.output\.dense|self_attn\.(?:q_proj|k_proj|v_proj|out_proj))")
# Checkpoint keys a vision backbone may leave over: a two-tower model's text side, its projections and logit
# scale/bias, a classification head, a masked autoencoder's decoder (pretraining only).
_SPARE = re.compile(r"(?:text_model|text_projection|visual_projection|logit_scale|logit_bias|classifier|decoder"
                    r"|vit\.decoder)(?:\.|$)")
_FIX_FOLDER = "pass a folder written by the model's and its image processor's save_pretrained"


class HfBackbone(Backbone):
    """A transformers vision model: class token, mean patch token, both, or the model's own pooler output."""

    family = "transformers"

    @property
    def config(self):
        """The transformers config of the vision model."""
        return self.model.config

    @property
    def tokens(self) -> bool:
        """ViT-style (a patch size): a token sequence; otherwise ConvNeXt-style feature maps."""
        return hasattr(self.config, "patch_size")

    @functools.cached_property  # read by every forward pass: its parameter names are scanned once
    def has_cls(self) -> bool:
        """Whether the sequence starts with a class token (SigLIP has none: it pools with attention)."""
        return any(re.fullmatch(r"(?:.*\.)?embeddings\.(?:cls_token|class_embedding)", name)
                   for name, _ in self.model.named_parameters())

    @functools.cached_property
    def prefix_tokens(self) -> int:
        """Tokens before the patch tokens: the class token and any registers (DINOv2 with registers, DINOv3)."""
        return (1 if self.has_cls else 0) + int(getattr(self.config, "num_register_tokens", 0) or 0)

    def poolings(self) -> tuple[str, ...]:
        if not self.tokens:
            return ("avg",)
        pooler = ("pooler",) if _has_pooler(self.model) else ()
        if not self.has_cls:
            return (*pooler, "mean")
        return ("cls_mean", "cls", "mean", *pooler)

    def width(self) -> int:
        width = getattr(self.config, "hidden_size", None) or self.config.hidden_sizes[-1]
        return int(width) * (2 if self.pooling == "cls_mean" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features from the model's own forward pass (registers are left out of the mean)."""
        out = self.model(pixel_values=x, **self._forward_kwargs(x))
        if self.pooling in ("pooler", "avg"):
            return out.pooler_output
        tokens = out.last_hidden_state
        patches = tokens[:, self.prefix_tokens:]
        if self.pooling == "cls":
            return tokens[:, 0]
        if self.pooling == "mean":
            return patches.mean(dim=1)
        return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=1)

    def _forward_kwargs(self, x: torch.Tensor) -> dict:
        """Position embeddings interpolated to the run's size where the model takes it; MAE's noise as the patch
        order, so its (ratio 0) masking keeps every patch in place and the features are deterministic."""
        params = self._forward_params
        kwargs: dict = {}
        if "interpolate_pos_encoding" in params:
            kwargs["interpolate_pos_encoding"] = True
        if "noise" in params:
            patch = int(self.config.patch_size)
            count = (x.shape[-2] // patch) * (x.shape[-1] // patch)
            kwargs["noise"] = torch.arange(count, device=x.device, dtype=torch.float32).expand(x.shape[0], count)
        return kwargs

    @functools.cached_property
    def _forward_params(self) -> frozenset[str]:
        """What the model's forward takes, read once (not per batch)."""
        return frozenset(inspect.signature(self.model.forward).parameters)

    def block_groups(self) -> BlockGroups:
        return layer_list_groups(self.model, self.name)

    def lora_targets(self) -> list[str]:
        return linear_names(self.model, _ATTN_LINEAR)

    def set_grad_checkpointing(self) -> None:
        if not getattr(self.model, "supports_gradient_checkpointing", False):
            raise UserError("--grad-checkpointing", f"transformers does not support it for {self.name}",
                            "leave it out, or lower --batch-size to save memory")
        # Non-reentrant: a frozen stem gives inputs without grad, which the reentrant variant cannot handle.
        # transformers 5 names it activation checkpointing (gradient_checkpointing_enable is its deprecated alias).
        enable = getattr(self.model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable({"use_reentrant": False})
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _has_pooler(model: nn.Module) -> bool:
    """Whether the forward pass returns a `pooler_output` (its output class says so; ViTMAE's does not)."""
    annotation = inspect.signature(model.forward).return_annotation
    fields = getattr(annotation, "__dataclass_fields__", None)
    if fields is None or "pooler_output" not in fields:
        return False
    # ViT without its pooling layer, SigLIP without its attention-pool head: pooler_output is None.
    return getattr(model, "pooler", True) is not None and getattr(model.config, "vision_use_head", True) is not False


# --- where the files are ---------------------------------------------------------------------------------------

def is_local(spec: BackboneSpec) -> bool:
    """`hf:/path`, `hf:./path`, `hf:~/path`, or an existing folder."""
    return spec.model_id.startswith(("/", ".", "~")) or Path(spec.model_id).is_dir()


def _folder(spec: BackboneSpec) -> Path:
    """The local folder, which must exist."""
    folder = Path(spec.model_id).expanduser()
    if not folder.is_dir():
        raise UserError(f"--backbone {spec.name}", f"folder {folder} does not exist",
                        "check the path, or name a hub model as hf:ORG/NAME")
    return folder


def _what(spec: BackboneSpec) -> str:
    return f"--backbone {spec.name}"



def _read_json(path: Path, spec: BackboneSpec) -> dict:
    """A JSON file of the model; unreadable, one line."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(_what(spec), f"cannot read {path.name} ({type(exc).__name__})", _FIX_FOLDER) from None


def _missing_preprocessor(spec: BackboneSpec) -> UserError:
    return UserError(_what(spec), f"has no {PREPROCESSOR}: its preprocessing (size, mean, std, resampling) is "
                     "not guessed", "save the image processor next to the model with "
                     "AutoImageProcessor.from_pretrained(...).save_pretrained(FOLDER)")


def _hub_file(spec: BackboneSpec, filename: str) -> Path:
    """One file of the hub repo (cache first); every failure one line."""
    try:
        return hub.download(spec.model_id, filename, spec.revision, _what(spec), spec.gated,
                            "pass a local folder as hf:/path")
    except UserError as exc:
        if filename == PREPROCESSOR and exc.problem == f"{spec.model_id} has no file {filename}":
            raise _missing_preprocessor(spec) from None
        raise


def config_files(spec: BackboneSpec, need_weights: bool) -> tuple[dict, dict, Path | None]:
    """(config.json, preprocessor_config.json, the folder holding them or None): from the local folder, the hub
    (cache first), or a catalog entry's embedded copies where no weights are wanted and the cache has no config."""
    if is_local(spec):
        folder = _folder(spec)
        if not (folder / CONFIG).is_file():
            raise UserError(_what(spec), f"folder {folder} has no {CONFIG}", _FIX_FOLDER)
        if not (folder / PREPROCESSOR).is_file():
            raise _missing_preprocessor(spec)
        return _read_json(folder / CONFIG, spec), _read_json(folder / PREPROCESSOR, spec), folder
    arch = spec.entry.architecture if spec.entry is not None else {}
    if (not need_weights and "config" in arch and "preprocessor" in arch
            and hub.cached_file(spec.model_id, (CONFIG,), spec.revision) is None):
        return dict(arch["config"]), dict(arch["preprocessor"]), None
    config = _hub_file(spec, CONFIG)
    processor = _hub_file(spec, PREPROCESSOR)
    return _read_json(config, spec), _read_json(processor, spec), config.parent


def _shards(index: Path, spec: BackboneSpec) -> list[str]:
    """The shard files a sharded checkpoint's index names."""
    weight_map = _read_json(index, spec).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise UserError(_what(spec), f"{index.name} has no weight_map", _FIX_FOLDER)
    return sorted(set(weight_map.values()))


def local_weight_files(spec: BackboneSpec) -> list[Path]:
    """The folder's weight files: model.safetensors, an index with its shards, or pytorch_model.bin."""
    folder = _folder(spec)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            files = [folder / name] + ([folder / s for s in _shards(folder / name, spec)] if name == INDEX else [])
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                raise UserError(_what(spec), f"folder {folder} lacks the shard(s) {', '.join(absent[:3])}",
                                "copy every shard its index names")
            return files
    raise UserError(_what(spec), f"folder {folder} has none of {', '.join(WEIGHT_FILES)}",
                    "save the model with save_pretrained, or pass --weights none")


def hub_weight_files(spec: BackboneSpec) -> list[Path]:
    """The hub repo's weight files (cache first), shards included; every failure one line."""
    first = hub.first_download(spec.model_id, WEIGHT_FILES, spec.revision, f"{_what(spec)} --weights pretrained",
                               spec.gated, "pass a local folder as hf:/path")
    if first.name != INDEX:
        return [first]
    return [first] + [_hub_file(spec, shard) for shard in _shards(first, spec)]


# --- the model -------------------------------------------------------------------------------------------------

def _configs(config_dict: dict, folder: Path | None, spec: BackboneSpec):
    """The transformers config, and the vision tower's where the model has two towers."""
    from transformers import AutoConfig

    try:
        if folder is not None:
            config = AutoConfig.from_pretrained(str(folder))
        else:
            body = {k: v for k, v in config_dict.items() if k != "model_type"}
            config = AutoConfig.for_model(config_dict["model_type"], **body)
    except (KeyError, ValueError) as exc:
        raise UserError(_what(spec), f"transformers cannot read its {CONFIG} ({str(exc)[:120]})",
                        "upgrade transformers, or check that it is a transformers model") from None
    vision = getattr(config, "vision_config", None)
    return vision if vision is not None else config


def _model_class(config, spec: BackboneSpec) -> type:
    """The model class for the (vision) config: SiglipVisionModel for SigLIP's vision config, AutoModel's otherwise."""
    from transformers import MODEL_MAPPING

    try:
        cls = MODEL_MAPPING[type(config)]
    except KeyError:
        raise UserError(_what(spec), f"transformers has no model class for {type(config).__name__}",
                        "pick a vision model (DINOv2, DINOv3, ViT, CLIP, SigLIP)") from None
    params = inspect.signature(cls.forward).parameters
    required = [n for n, p in params.items() if n not in ("self", "pixel_values") and p.default is p.empty
                and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if "pixel_values" not in params or required:
        why = f"needs {', '.join(required)} besides pixel_values" if "pixel_values" in params else \
            "takes no pixel_values"
        raise UserError(_what(spec), f"{cls.__name__} {why}: it is no fixed-size image encoder",
                        "pick an image model (DINOv2, DINOv3, ViT, CLIP, SigLIP)")
    return cls


def _prepare(config) -> None:
    """Settings that make the features deterministic: MAE masks no patch."""
    if hasattr(config, "mask_ratio"):
        config.mask_ratio = 0.0


def _from_pretrained(cls: type, config, folder: Path, spec: BackboneSpec, notes: list[str]) -> nn.Module:
    """transformers' own loader (its key conversions, shards, prefixes), then a strict check of what it reports."""
    try:  # mismatched shapes are reported below by name, not raised as transformers' "see the report above"
        model, info = cls.from_pretrained(str(folder), config=config, output_loading_info=True,
                                          ignore_mismatched_sizes=True, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(str(folder), f"transformers cannot load {cls.__name__} from it ({type(exc).__name__}: "
                        f"{str(exc)[:160]})", "pass the folder save_pretrained wrote for this model") from None
    problems = []
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched:
        shapes = [f"{k} {tuple(a)}≠{tuple(b)}" for k, a, b in mismatched]
        problems.append(f"shape mismatch ({len(shapes)}): {', '.join(shapes[:4])}")
    missing = sorted(info.get("missing_keys") or [])
    if missing and _drop_pooler(model, missing):  # a classifier's checkpoint (ViT) has no pooler: "pooler" is off
        notes.append(f"the checkpoint has no pooler ({len(missing)} tensors): pooling 'pooler' is not offered")
        missing = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}")
    unexpected = sorted(info.get("unexpected_keys") or [])
    extra = [k for k in unexpected if not _SPARE.match(k)]
    if extra:
        problems.append(f"unexpected keys ({len(extra)}): {', '.join(extra[:4])}{' …' if len(extra) > 4 else ''}")
    if info.get("error_msgs"):
        problems.append("; ".join(str(m)[:200] for m in info["error_msgs"][:2]))
    if problems:
        raise UserError(str(folder), f"does not fit {cls.__name__}: {'; '.join(problems)}",
                        "pass the folder save_pretrained wrote for this model, unchanged")
    if unexpected:
        parts = sorted({k.split(".", 1)[0] for k in unexpected})
        notes.append(f"left out {len(unexpected)} checkpoint tensors of {', '.join(parts)} (not the vision backbone)")
    return model


def _drop_pooler(model: nn.Module, missing: list[str]) -> bool:
    """Where exactly the pooler's weights are missing, remove the pooler (transformers drew it at random)."""
    pooler = getattr(model, "pooler", None)
    if not isinstance(pooler, nn.Module):
        return False
    if sorted(missing) != sorted(f"pooler.{k}" for k in pooler.state_dict()):
        return False
    model.pooler = None
    return True


def _from_file(model: nn.Module, path: Path, notes: list[str]) -> None:
    """A local checkpoint of this model's state dict (its current key layout), strictly."""
    state = read_state_dict(path, notes)
    prefix = getattr(model, "base_model_prefix", "")
    expected = model.state_dict()
    if prefix and not any(k in expected for k in state) and any(k.startswith(prefix + ".") for k in state):
        state = {k.removeprefix(prefix + "."): v for k, v in state.items()}
        notes.append(f"{path.name}: stripped the {prefix!r} prefix")
    load_strict(model, state, str(path), f"pass a state dict of {type(model).__name__} (model.state_dict()), or "
                "the folder save_pretrained wrote as hf:/path", lambda k: bool(_SPARE.match(k)))


def _create(cls: type, config, seed: int | None, meta: bool) -> nn.Module:
    """The model from its config alone: on the meta device, or drawn from the seed."""
    if meta:
        return on_meta(lambda: cls(config))
    if seed is not None:
        torch.manual_seed(seed)  # `none` weights are reproducible from the run's seed
    return cls(config)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' own warnings off while a model is built: its load report (what was left out, which `notes`
    names on one line) and config remarks on a tower this tool never runs (SigLIP's text token ids)."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def build(spec: BackboneSpec, weights: str, image_size: int | None, pooling: str, seed: int | None,
          meta: bool = False) -> HfBackbone:
    """Create the transformers backbone with its weights (pretrained, none, or a local file)."""
    with _quiet():
        return _build(spec, weights, image_size, pooling, seed, meta)


def _build(spec: BackboneSpec, weights: str, image_size: int | None, pooling: str, seed: int | None,
           meta: bool) -> HfBackbone:
    notes: list[str] = []
    pretrained = weights in WEIGHT_KEYWORDS and weights != "none" and not meta
    config_dict, processor, folder = config_files(spec, pretrained)
    config = _configs(config_dict, folder, spec)
    _prepare(config)
    cls = _model_class(config, spec)
    preprocess = _preprocess(processor, config, spec, image_size)
    if pretrained:
        files = local_weight_files(spec) if is_local(spec) else hub_weight_files(spec)
        model = _from_pretrained(cls, config, files[0].parent, spec, notes)
    else:
        model = _create(cls, config, seed, meta)
        if weights not in WEIGHT_KEYWORDS and not meta:
            _from_file(model, Path(weights), notes)
    model = model.float().eval()
    identity = weights_identity(spec, weights, seed) if not meta else "meta"
    if pretrained:
        notes.insert(0, f"weights: {', '.join(f.name for f in files)} of {identity} ({cls.__name__})")
    return HfBackbone(model, spec, preprocess, pooling, identity, notes).eval()


# --- preprocessing -------------------------------------------------------------------------------------------------

def _side(value, key: str, spec: BackboneSpec) -> tuple[int, str]:
    """A processor size dict → (pixels, kind): `shortest_edge`, or a square height/width."""
    if isinstance(value, dict) and "shortest_edge" in value:
        return int(value["shortest_edge"]), "shortest_edge"
    if isinstance(value, dict) and "height" in value and "width" in value:
        if int(value["height"]) != int(value["width"]):
            raise UserError(_what(spec), f"{PREPROCESSOR} {key} {value} is not square",
                            "use a model with square inputs, or re-save its processor with a square size")
        return int(value["height"]), "square"
    raise UserError(_what(spec), f"{PREPROCESSOR} {key} {value!r} is in no layout read here",
                    "re-save it with a current transformers (AutoImageProcessor.save_pretrained) so sizes are "
                    "{'shortest_edge': N} or {'height': N, 'width': N}")


def _triple(value, key: str, spec: BackboneSpec) -> tuple[float, float, float]:
    if isinstance(value, list | tuple) and len(value) == 3:
        return tuple(float(v) for v in value)  # type: ignore[return-value]
    raise UserError(_what(spec), f"{PREPROCESSOR} {key} {value!r} is not three channel values",
                    "re-save the image processor of an RGB model")


def _preprocess(processor: dict, config, spec: BackboneSpec, image_size: int | None) -> Preprocess:
    """The image processor's preprocessing at the run's size (its own size when none is given)."""
    resample = processor.get("resample")
    if resample not in _RESAMPLE:
        raise UserError(_what(spec), f"{PREPROCESSOR} resample {resample!r} is neither 2 (bilinear) nor 3 "
                        "(bicubic)", "set resample to 2 or 3 in it: the image pipeline has those two")
    for key in ("image_mean", "image_std", "size"):
        if key not in processor:
            raise UserError(_what(spec), f"{PREPROCESSOR} has no {key}", "re-save it with save_pretrained")
    resize, _ = _side(processor["size"], "size", spec)
    size, crop_pct = resize, 1.0
    if processor.get("do_center_crop") and processor.get("crop_size") is not None:
        crop, _ = _side(processor["crop_size"], "crop_size", spec)
        # A resize then a centre crop keeps crop/resize of the image (a square resize of square images as well).
        size, crop_pct = crop, crop / resize
    if getattr(config, "patch_size", None):
        patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
        check_patch_size(int(patch), spec.name, image_size)
    return Preprocess(image_size or size, _triple(processor["image_mean"], "image_mean", spec),
                      _triple(processor["image_std"], "image_std", spec), _RESAMPLE[resample], float(crop_pct))


# --- identity ----------------------------------------------------------------------------------------------------

def _files_identity(files: list[Path]) -> str:
    """`file:` + sha256 over the files' sha256s, in order (config first, then the weights)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return f"file:{digest.hexdigest()}"


def weights_identity(spec: BackboneSpec, weights: str, seed: int | None) -> str:
    """`hub:REPO@COMMIT` (the commit the cache holds), `file:SHA256` for a local folder or file, or the seed of
    `none` with the architecture's short sha."""
    if weights == "none":
        config, _, _ = config_files(spec, False)
        return f"none:seed={seed}:{json_digest(config, 12)}"
    if weights not in WEIGHT_KEYWORDS:
        return file_identity(Path(weights))
    if is_local(spec):
        return _files_identity([_folder(spec) / CONFIG, *local_weight_files(spec)])
    return hub.identity(spec.model_id, hub.cached_file(spec.model_id, WEIGHT_FILES, spec.revision), spec.revision)


def available_offline(spec: BackboneSpec) -> bool:
    """Whether the pretrained weights are in the local Hugging Face cache (shards included), or the folder exists."""
    if is_local(spec):
        return Path(spec.model_id).expanduser().is_dir()
    first = hub.cached_file(spec.model_id, WEIGHT_FILES, spec.revision)
    if first is None or first.name != INDEX:
        return first is not None
    try:
        shards = _shards(first, spec)
    except UserError:
        return False
    return hub.cached_file(spec.model_id, (CONFIG,), spec.revision) is not None and all(
        hub.cached_file(spec.model_id, (s,), spec.revision) is not None for s in shards)
