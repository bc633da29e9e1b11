"""How a NIfTI set becomes 2D samples: the volume options' choices and rules, and the validated options the volume
readers take. No imaging libraries, so config can use it; the options are declared (defaults, help) in TrainConfig."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from medtransfer.errors import UserError

# Array axis of each plane once a volume is reoriented to RAS (x: left→Right, y: posterior→Anterior, z: up).
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
ModalityMode = Literal["fused", "separate"]
Plane = Literal["axial", "coronal", "sagittal"]  # PLANE_AXIS's keys (a test keeps the two equal)
Normalizer = Literal["percentile", "zscore"]
SEG_NAME = "seg"  # the segmentation's file name in a patient folder: never an image modality


def parse_slices(text: str) -> tuple[str, int]:
    """`center:K`, `all-nonzero` or `tumor:K` as (kind, K); K is 0 for all-nonzero."""
    kind, _, count = text.strip().lower().partition(":")
    if kind == "all-nonzero" and not count:
        return kind, 0
    if kind in ("center", "tumor") and count.isdigit() and int(count) > 0:
        return kind, int(count)
    raise UserError(f"slices {text!r}", "is not center:K, all-nonzero or tumor:K with K a positive whole number",
                    "write e.g. center:16, all-nonzero or tumor:8")


def check_pattern(pattern: str) -> str:
    """The file name pattern, if it names {modality} and at most {case}; else a UserError."""
    try:
        if "{modality}" not in pattern:
            raise KeyError("modality")
        pattern.format(case="c", modality="m")
    except (KeyError, IndexError, ValueError):
        raise UserError(f"pattern {pattern!r}", "must name {modality} and may name {case}, nothing else",
                        "write e.g. {case}_{modality}.nii.gz") from None
    return pattern


def modality_problems(modalities: Sequence[str], mode: ModalityMode) -> list[UserError]:
    """What is wrong with a list of modalities for a modality mode: repeats, the segmentation, a channel count."""
    names = [m.lower() for m in modalities]
    listed = ",".join(modalities)
    checks = [
        (len(set(names)) < len(names), UserError(f"modalities {listed}", "repeat a name (names ignore case)",
                                                 "list each modality once")),
        (SEG_NAME in names, UserError(f"modality {SEG_NAME!r}", "is the segmentation, not an image",
                                      "list image modalities only; tumor:K finds the seg file itself")),
        (mode == "fused" and len(names) not in (1, 3), UserError(
            f"modalities {listed}", f"fused mode makes 1 (grey) or 3 (RGB) channels, not {len(names)}",
            "list 1 or 3 modalities, or use separate mode")),
    ]
    return [error for bad, error in checks if bad]


@dataclass(frozen=True, kw_only=True)
class VolumeOptions:
    """How a NIfTI set becomes 2D samples: modalities (channel order), slice rule, plane, normalisation, labels.

    Built from a validated TrainConfig (data.load.volume_options), so it checks nothing itself."""

    modalities: tuple[str, ...]
    modality_mode: ModalityMode
    slices: str
    plane: Plane
    normalize: Normalizer
    labels_csv: str | None
    skip_incomplete: bool
    pattern: str
    seg_name: ClassVar[str] = SEG_NAME

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))  # a list from YAML or the CLI is fine too

    @property
    def fused(self) -> bool:
        """Whether modalities become the channels of one image."""
        return self.modality_mode == "fused"

    @property
    def axis(self) -> int:
        """The RAS array axis the slices are taken along."""
        return PLANE_AXIS[self.plane]
