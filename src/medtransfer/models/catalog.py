"""Short backbone names → timm model names; any other timm name works too."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import timm

from medtransfer.errors import UserError


@dataclass(frozen=True)
class CatalogEntry:
    """One named backbone: its timm name and a note on where it comes from."""

    name: str
    timm_name: str
    note: str


def _entries() -> dict[str, CatalogEntry]:
    cnn = {  # torchvision ImageNet weights, as in the reference study
        "vgg16": "vgg16.tv_in1k", "resnet50": "resnet50.tv_in1k", "densenet121": "densenet121.tv_in1k",
        "resnet18": "resnet18.tv_in1k",
    }
    entries = {k: CatalogEntry(k, v, "ImageNet-1k supervised (torchvision weights)") for k, v in cnn.items()}
    for size, timm_size in (("s", "small"), ("b", "base"), ("l", "large"), ("g", "giant")):
        for reg, timm_reg in (("", ""), ("_reg", "_reg4")):
            name = f"dinov2_vit{size}14{reg}"
            entries[name] = CatalogEntry(name, f"vit_{timm_size}_patch14{timm_reg}_dinov2.lvd142m",
                                         "DINOv2 self-supervised (LVD-142M)" + (" with 4 registers" if reg else ""))
    return entries


CATALOG: dict[str, CatalogEntry] = _entries()


def resolve(name: str) -> CatalogEntry:
    """A catalog name, or any timm model name (with or without a pretrained tag)."""
    if name in CATALOG:
        return CATALOG[name]
    base = name.split(".", 1)[0]
    if timm.is_model(base):
        return CatalogEntry(name, name, "timm model")
    near = difflib.get_close_matches(name, list(dict.fromkeys([*CATALOG, *timm.list_models()])), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(near)}?" if near else "see `medtransfer backbones` or timm.list_models()"
    raise UserError(f"--backbone {name}", "unknown backbone", hint)
