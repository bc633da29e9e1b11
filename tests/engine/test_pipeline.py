"""Tensor-side input pipeline: normalisation equals torchvision's, augmentation is per sample and seeded."""

from __future__ import annotations

import numpy as np
import torch
from torchvision import transforms as T

from medtransfer.engine.pipeline import InputPipeline, augment_batch
from medtransfer.models.backbone import Preprocess

PRE = Preprocess(16, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", 1.0)


def _batch(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, 16, 16), dtype=np.uint8))


def test_normalisation_equals_to_tensor_then_normalize():
    images = _batch()
    reference = torch.stack([T.Normalize(PRE.mean, PRE.std)(img.float() / 255) for img in images])
    assert torch.allclose(InputPipeline(PRE, torch.device("cpu"))(images), reference, atol=1e-5)


def test_without_rotation_each_sample_is_itself_or_its_mirror_and_both_occur():
    x = _batch(64).float()
    out = augment_batch(x, torch.Generator().manual_seed(0), max_degrees=0.0)
    same = [(o - i).abs().max().item() < 1e-3 for o, i in zip(out, x)]
    mirrored = [(o - i.flip(-1)).abs().max().item() < 1e-3 for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 10 < sum(mirrored) < 54


def test_rotations_differ_per_sample_and_repeat_with_the_seed():
    x = _batch(1).float().repeat(8, 1, 1, 1)
    a = augment_batch(x, torch.Generator().manual_seed(3))
    b = augment_batch(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert all(not torch.allclose(a[0], a[k]) for k in range(1, 8))
    # A small rotation keeps the image: far closer to the original (or its mirror) than to another image.
    other = _batch(1, seed=9).float()[0]
    for img in a:
        near = min((img - x[0]).abs().mean(), (img - x[0].flip(-1)).abs().mean())
        assert near < (img - other).abs().mean()
