"""`synthetic:` — procedurally generated images with a learnable class signal, for demos and offline tests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from medtransfer.data.table import SampleTable
from medtransfer.errors import UserError


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the generator, parsed from `synthetic:n=600,size=64,classes=3,groups=120,seed=0`."""

    n: int = 600
    size: int = 64
    classes: int = 2
    groups: int = 0  # 0: one sample per patient (no grouping)
    channels: int = 1
    seed: int = 0
    noise: float = 0.35

    @classmethod
    def parse(cls, spec: str) -> SyntheticSpec:
        """Parse the text after `synthetic:`; unknown keys or bad values are user errors."""
        body = spec.split(":", 1)[1] if ":" in spec else ""
        fields = {}
        for item in filter(None, body.split(",")):
            key, _, value = item.partition("=")
            if key not in cls.__dataclass_fields__:
                raise UserError(spec, f"unknown synthetic option {key!r}",
                                f"use {', '.join(cls.__dataclass_fields__)}")
            try:
                fields[key] = type(getattr(cls, key))(value)
            except ValueError:
                raise UserError(spec, f"{key}={value!r} is not a number", "e.g. synthetic:n=600,size=64") from None
        made = cls(**fields)
        if (made.n < 2 * made.classes or made.classes < 2 or made.size < 8 or made.channels not in (1, 3)
                or made.seed < 0 or made.noise < 0 or (made.groups != 0 and made.groups < made.classes)):
            raise UserError(spec, "needs classes >= 2, n >= 2*classes, size >= 8, channels 1 or 3, seed >= 0, "
                            "noise >= 0, and groups 0 or >= classes", "e.g. synthetic:n=600,size=64,classes=2")
        return made


class SyntheticReader:
    """Draws sample i deterministically from (seed, i): any count, no memory held."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        grid = np.linspace(-1.0, 1.0, spec.size, dtype=np.float32)
        self.yy, self.xx = np.meshgrid(grid, grid, indexing="ij")

    def __call__(self, ref: object) -> np.ndarray:
        spec, index = self.spec, int(ref)
        label, group = _label_of(spec, index), _group_of(spec, index)
        rng = np.random.default_rng([spec.seed, index])
        patient = np.random.default_rng([spec.seed, 10**9 + group])
        # Class signal: an elongated blob whose orientation encodes the class (a shape cue, like a lesion's form).
        angle = np.pi * label / spec.classes + rng.normal(0, 0.12)
        cy, cx = rng.uniform(-0.35, 0.35, size=2)
        u = (self.xx - cx) * np.cos(angle) + (self.yy - cy) * np.sin(angle)
        v = -(self.xx - cx) * np.sin(angle) + (self.yy - cy) * np.cos(angle)
        blob = np.exp(-(u / 0.45) ** 2 - (v / 0.12) ** 2)
        # Patient effect: shared brightness and contrast, which a leaky split would let a model memorise.
        base = patient.uniform(0.15, 0.45) + 0.1 * (self.yy + 1) * patient.uniform(-1, 1)
        image = base + patient.uniform(0.35, 0.6) * blob + rng.normal(0, spec.noise * 0.3, self.xx.shape)
        if spec.channels == 3:
            tint = patient.uniform(0.8, 1.2, size=3)
            image = image[:, :, None] * tint
        return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _group_of(spec: SyntheticSpec, index: int) -> int:
    return index % spec.groups if spec.groups else index


def _label_of(spec: SyntheticSpec, index: int) -> int:
    return _group_of(spec, index) % spec.classes


def load_synthetic(spec_text: str) -> SampleTable:
    """Build a synthetic SampleTable (no predefined split; patients as groups when groups > 0)."""
    spec = SyntheticSpec.parse(spec_text)
    indices = np.arange(spec.n)
    frame = pd.DataFrame({
        "sample_id": [f"syn_{i:06d}" for i in indices],
        "label": [f"class{_label_of(spec, i)}" for i in indices],
        "group": [f"patient{_group_of(spec, i):05d}" for i in indices] if spec.groups else None,
        "split": None,
        "ref": indices,
    })
    fingerprint = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()
    classes = [f"class{k}" for k in range(spec.classes)]
    return SampleTable(frame, SyntheticReader(spec), f"synthetic:{spec_text.partition(':')[2]}", fingerprint, classes)
