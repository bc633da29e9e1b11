"""How a NIfTI set becomes 2D samples: the volume options, validated; no imaging libraries, so config can use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medtransfer.errors import UserError

# Array axis of each plane once a volume is reoriented to RAS (x: left→Right, y: posterior→Anterior, z: up).
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
MODES = ("fused", "separate")
NORMALIZERS = ("percentile", "zscore")


def parse_slices(text: str) -> tuple[str, int]:
    """`center:K`, `all-nonzero` or `tumor:K` as (kind, K); K is 0 for all-nonzero."""
    kind, _, count = text.strip().lower().partition(":")
    if kind == "all-nonzero" and not count:
        return kind, 0
    if kind in ("center", "tumor") and count.isdigit() and int(count) > 0:
        return kind, int(count)
    raise UserError(f"slices {text!r}", "is not center:K, all-nonzero or tumor:K with K a positive whole number",
                    "write e.g. center:16, all-nonzero or tumor:8")


@dataclass(frozen=True)
class VolumeOptions:
    """How a NIfTI set becomes 2D samples: modalities (channel order), slice rule, plane, normalisation, labels."""

    modalities: tuple[str, ...] = ("t1post", "t2", "flair")
    modality_mode: Literal["fused", "separate"] = "fused"
    slices: str = "center:16"
    plane: Literal["axial", "coronal", "sagittal"] = "axial"
    normalize: Literal["percentile", "zscore"] = "percentile"
    labels_csv: str | None = None
    skip_incomplete: bool = False
    pattern: str = "{case}_{modality}.nii.gz"
    seg_name: str = "seg"

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))  # a list from YAML or the CLI is fine too
        problems = _option_problems(self)
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise UserError("volume options", "; ".join(p.line() for p in problems), "fix each listed option")

    @property
    def fused(self) -> bool:
        """Whether modalities become the channels of one image."""
        return self.modality_mode == "fused"

    @property
    def axis(self) -> int:
        """The RAS array axis the slices are taken along."""
        return PLANE_AXIS[self.plane]


def _option_problems(opts: VolumeOptions) -> list[UserError]:
    names = [m.lower() for m in opts.modalities]
    checks = [
        (not names, UserError("modalities", "none given", "name one or three, e.g. t1post,t2,flair")),
        (len(set(names)) < len(names), UserError(f"modalities {opts.modalities}", "repeat a name (names ignore case)",
                                                 "list each modality once")),
        (opts.seg_name.lower() in names, UserError(f"modality {opts.seg_name!r}", "is the segmentation, not an image",
                                                   "list image modalities only; tumor:K finds the seg file itself")),
        (opts.modality_mode not in MODES, UserError(f"modality mode {opts.modality_mode!r}", "is unknown",
                                                    f"use one of {', '.join(MODES)}")),
        (opts.fused and len(names) not in (0, 1, 3), UserError(
            f"modalities {','.join(opts.modalities)}", f"fused mode makes 1 (grey) or 3 (RGB) channels, not {len(names)}",
            "list 1 or 3 modalities, or use separate mode")),
        (opts.plane not in PLANE_AXIS, UserError(f"plane {opts.plane!r}", "is unknown", f"use one of {', '.join(PLANE_AXIS)}")),
        (opts.normalize not in NORMALIZERS, UserError(f"normalize {opts.normalize!r}", "is unknown",
                                                      f"use one of {', '.join(NORMALIZERS)}")),
    ]
    problems = [error for bad, error in checks if bad]
    try:
        parse_slices(opts.slices)
    except UserError as exc:
        problems.append(exc)
    try:
        if "{modality}" not in opts.pattern:
            raise KeyError("modality")
        opts.pattern.format(case="c", modality="m")
    except (KeyError, IndexError, ValueError):
        problems.append(UserError(f"pattern {opts.pattern!r}", "must name {modality} and may name {case}, nothing else",
                                  "write e.g. {case}_{modality}.nii.gz"))
    return problems


