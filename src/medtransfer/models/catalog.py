"""Backbone names → a family and a model: catalog names, `hf-hub:` timm names, `hf:` transformers models,
`open_clip:` models, or any timm name.

A catalog entry also carries what the published model card says (licence, gated, embedding width, pooling) and
the architecture, so the entry can be built on the meta device, or with `--weights none`, without its hub files.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import timm

from medtransfer.errors import UserError

FAMILIES = ("timm", "transformers", "open_clip")
# Prefixes that name a family: `hf-hub:` is timm's own spelling for timm models on the hub.
PREFIXES = {"hf:": "transformers", "open_clip:": "open_clip", "hf-hub:": "timm"}


@dataclass(frozen=True)
class CatalogEntry:
    """One named backbone: its family and model id, where its weights come from, and what its card says."""

    name: str
    family: str
    model_id: str  # timm name (`hf-hub:ORG/NAME` too), transformers repo id, or open_clip name
    note: str
    licence: str = ""
    gated: bool = False
    width: int | None = None  # the published embedding width, with `pooling`
    pooling: str | None = None  # the card's pooling; None: the family's default
    # The architecture where the hub's config cannot be read offline: timm kwargs, a transformers config.json, or
    # open_clip's model and preprocess config.
    architecture: dict = field(default_factory=dict)
    weights_file: tuple[str, str] | None = None  # (hub repo, file) of a checkpoint published outside the family


@dataclass(frozen=True)
class BackboneSpec:
    """What `--backbone` names: the family, the model id, the hub revision (`@REV`), and the catalog entry if any."""

    name: str
    family: str
    model_id: str
    revision: str | None = None
    entry: CatalogEntry | None = None

    @property
    def hub_repo(self) -> str | None:
        """The hub repo of an `hf-hub:` model id (timm's and open_clip's spelling), else None."""
        return self.model_id.removeprefix("hf-hub:") if self.model_id.startswith("hf-hub:") else None

    @property
    def gated(self) -> bool:
        """Whether the catalog marks its hub repo as gated (the error then says how to get access)."""
        return bool(self.entry and self.entry.gated)


_IMAGENET = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _foundation() -> list[CatalogEntry]:
    """The foundation models of issue 11, each with its card's facts (checked on the meta device in the tests)."""
    dinov3 = "DINOv3 self-supervised (LVD-1689M, Meta)"
    vit_l16 = {"init_values": 1e-5, "dynamic_img_size": True}

    def imagenet_crop(crop_pct: float) -> dict:
        return {"mean": _IMAGENET[0], "std": _IMAGENET[1], "crop_pct": crop_pct, "interpolation": "bicubic"}

    return [
        CatalogEntry("dinov3_vits16", "timm", "vit_small_patch16_dinov3.lvd1689m", dinov3, "DINOv3 License", False,
                     384, "cls"),
        CatalogEntry("dinov3_vitb16", "timm", "vit_base_patch16_dinov3.lvd1689m", dinov3, "DINOv3 License", False,
                     768, "cls"),
        CatalogEntry("dinov3_vitl16", "timm", "vit_large_patch16_dinov3.lvd1689m", dinov3, "DINOv3 License", False,
                     1024, "cls"),
        CatalogEntry("dinov3_convnext_tiny", "timm", "convnext_tiny.dinov3_lvd1689m", dinov3, "DINOv3 License", False,
                     768, "avg"),
        CatalogEntry("rad_dino", "transformers", "microsoft/rad-dino",
                     "RAD-DINO: DINOv2 ViT-B/14 trained on chest X-rays (Microsoft)", "MSRLA (research use)", False,
                     768, "cls", {
                         "config": {"model_type": "dinov2", "architectures": ["Dinov2Model"], "hidden_size": 768,
                                    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                                    "patch_size": 14, "image_size": 518, "layerscale_value": 1.0,
                                    "layer_norm_eps": 1e-6},
                         "preprocessor": {"image_processor_type": "BitImageProcessor", "do_resize": True,
                                          "size": {"shortest_edge": 518}, "do_center_crop": True,
                                          "crop_size": {"height": 518, "width": 518}, "resample": 3,
                                          "image_mean": [0.5307, 0.5307, 0.5307], "image_std": [0.2583, 0.2583, 0.2583]},
                     }),
        CatalogEntry("medsiglip", "transformers", "google/medsiglip-448",
                     "MedSigLIP-448: SigLIP So400m vision tower trained on medical images (Google)",
                     "Health AI Developer Foundations terms", True, 1152, "pooler", {
                         "config": {"model_type": "siglip", "architectures": ["SiglipModel"],
                                    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152,
                                                      "intermediate_size": 4304, "num_hidden_layers": 27,
                                                      "num_attention_heads": 16, "patch_size": 14, "image_size": 448,
                                                      "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6},
                                    "text_config": {"model_type": "siglip_text_model"}},
                         "preprocessor": {"image_processor_type": "SiglipImageProcessor", "do_resize": True,
                                          "size": {"height": 448, "width": 448}, "resample": 2,
                                          "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
                     }),
        CatalogEntry("biomedclip", "open_clip", "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
                     "BiomedCLIP: CLIP ViT-B/16 trained on PMC-15M figure-caption pairs (Microsoft)", "MIT", False,
                     512, "proj", {
                         "model_cfg": {"embed_dim": 512,
                                       "vision_cfg": {"timm_model_name": "vit_base_patch16_224",
                                                      "timm_model_pretrained": False, "timm_pool": "",
                                                      "timm_proj": "linear", "image_size": 224}},
                         "preprocess_cfg": {"mean": list(_CLIP_MEAN), "std": list(_CLIP_STD)},
                     }),
        CatalogEntry("uni", "timm", "hf-hub:MahmoodLab/UNI", "UNI: ViT-L/16 trained on 100k pathology slides "
                     "(Mahmood Lab)", "CC-BY-NC-ND 4.0", True, 1024, "cls",
                     {"model": "vit_large_patch16_224", "kwargs": {**vit_l16, "img_size": 224}, **imagenet_crop(1.0)}),
        CatalogEntry("virchow2", "timm", "hf-hub:paige-ai/Virchow2", "Virchow2: ViT-H/14 with 4 registers trained "
                     "on 3.1M pathology slides (Paige); class token ⊕ mean patch token", "CC-BY-NC-ND 4.0", True,
                     2560, "cls_mean",
                     {"model": "vit_huge_patch14_224",
                      "kwargs": {"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "reg_tokens": 4,
                                 "global_pool": "", "dynamic_img_size": True},
                      # Not JSON: the card passes these as classes (timm.layers.SwiGLUPacked, torch.nn.SiLU).
                      "layers": {"mlp_layer": "SwiGLUPacked", "act_layer": "silu"},
                      **imagenet_crop(1.0)}),
        CatalogEntry("retfound", "timm", "vit_large_patch16_224", "RETFound: MAE ViT-L/16 trained on 904k colour "
                     "fundus photographs (Zhou et al., Nature 2023); mean patch token", "CC-BY-NC 4.0", True,
                     1024, "mean", {"kwargs": {}, **imagenet_crop(0.875)},  # its eval transform: resize 256, crop 224
                     ("YukunZhou/RETFound_mae_natureCFP", "RETFound_mae_natureCFP.pth")),
    ]


def _entries() -> dict[str, CatalogEntry]:
    cnn = {  # torchvision ImageNet weights, as in the reference study
        "vgg16": "vgg16.tv_in1k", "resnet50": "resnet50.tv_in1k", "densenet121": "densenet121.tv_in1k",
        "resnet18": "resnet18.tv_in1k",
    }
    entries = {k: CatalogEntry(k, "timm", v, "ImageNet-1k supervised (torchvision weights)", "BSD-3-Clause")
               for k, v in cnn.items()}
    for size, timm_size in (("s", "small"), ("b", "base"), ("l", "large"), ("g", "giant")):
        for reg, timm_reg in (("", ""), ("_reg", "_reg4")):
            name = f"dinov2_vit{size}14{reg}"
            entries[name] = CatalogEntry(name, "timm", f"vit_{timm_size}_patch14{timm_reg}_dinov2.lvd142m",
                                         "DINOv2 self-supervised (LVD-142M)" + (" with 4 registers" if reg else ""),
                                         "Apache-2.0")
    entries.update({entry.name: entry for entry in _foundation()})
    return entries


CATALOG: dict[str, CatalogEntry] = _entries()


def spelling(entry: CatalogEntry) -> str:
    """The entry's model as `--backbone` would name it outside the catalog: `hf:ORG/NAME`, `open_clip:…`, or a timm
    name (its `hf-hub:` prefix is part of the id)."""
    prefix = next((p for p, family in PREFIXES.items() if family == entry.family and family != "timm"), "")
    return prefix + entry.model_id


def _split_revision(model_id: str) -> tuple[str, str | None]:
    """`ORG/NAME@REV` → (`ORG/NAME`, `REV`); a local folder keeps any `@` in its path."""
    if "@" in model_id and not model_id.startswith(("/", ".", "~")):
        base, revision = model_id.rsplit("@", 1)
        return base, revision or None
    return model_id, None


def resolve(name: str) -> BackboneSpec:
    """A catalog name, a family-prefixed name, or any timm model name (with or without a pretrained tag)."""
    if name in CATALOG:
        entry = CATALOG[name]
        return BackboneSpec(name, entry.family, entry.model_id, None, entry)
    for prefix, family in PREFIXES.items():
        if name.startswith(prefix):
            # timm reads `hf-hub:` itself; the others drop their prefix (`open_clip:hf-hub:ORG/NAME` keeps its own).
            rest = name if prefix == "hf-hub:" else name[len(prefix):]
            if not rest or rest == "hf-hub:":
                raise UserError(f"--backbone {name}", f"names no model after {prefix}",
                                f"e.g. {prefix}ORG/NAME" + (" or a local folder" if family == "transformers" else ""))
            model_id, revision = _split_revision(rest)
            return BackboneSpec(name, family, model_id, revision)
    base, _, tag = name.partition(".")
    if timm.is_model(base):
        if tag and name not in timm.list_pretrained(f"{base}.*"):
            tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{base}.*")]
            raise UserError(f"--backbone {name}", f"timm has no pretrained tag {tag!r} for {base}",
                            f"use one of {', '.join(tags)}" if tags else f"use {base} (it has no pretrained tags)")
        return BackboneSpec(name, "timm", name)
    near = difflib.get_close_matches(name, list(dict.fromkeys([*CATALOG, *timm.list_models()])), n=3, cutoff=0.6)
    hint = (f"did you mean {', '.join(near)}?" if near else
            "see `medtransfer backbones`, a timm name, hf-hub:ORG/NAME, hf:ORG/NAME or open_clip:NAME")
    raise UserError(f"--backbone {name}", "unknown backbone", hint)
