"""Backbone families: each module builds a `Backbone` for one library (timm, transformers, open_clip) and names its
weights' identity. A family whose library is an optional extra is imported only when a backbone of it is asked for."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from medtransfer.errors import UserError
from medtransfer.models.catalog import BackboneSpec

# family → (its module here, the library it needs, the extra that installs it)
FAMILY_MODULES: dict[str, tuple[str, str, str | None]] = {
    "timm": ("medtransfer.models.families.timm_models", "timm", None),
    "transformers": ("medtransfer.models.families.hf_models", "transformers", "hf"),
    "open_clip": ("medtransfer.models.families.clip_models", "open_clip", "clip"),
}


def check_extra(spec: BackboneSpec) -> None:
    """A family's library is installed; missing, one line naming the extra."""
    _, library, extra = FAMILY_MODULES[spec.family]
    try:  # imported, not only found: a broken install is as missing as an absent one
        if importlib.util.find_spec(library) is None:
            raise ImportError(library)
        importlib.import_module(library)
    except ImportError:
        raise UserError(f"--backbone {spec.name}", f"is a {spec.family} model and needs the {library} package",
                        f"pip install 'medtransfer[{extra}]'") from None


def family_module(spec: BackboneSpec) -> ModuleType:
    """The module that builds this family's backbones, once its library is known to be installed."""
    check_extra(spec)
    return importlib.import_module(FAMILY_MODULES[spec.family][0])
