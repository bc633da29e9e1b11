"""From a SampleTable's pixels to normalised tensors, with the backbone's own preprocessing."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from medtransfer.data.table import SampleTable, to_rgb
from medtransfer.models.backbone import Preprocess

INTERPOLATION = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
                 "nearest": T.InterpolationMode.NEAREST}


def build_transform(pre: Preprocess, augment: bool = False) -> T.Compose:
    """timm-style eval transform (resize to size/crop_pct, centre crop); optional flip and small rotation."""
    mode = INTERPOLATION.get(pre.interpolation, T.InterpolationMode.BILINEAR)
    steps: list = [T.Resize(int(math.floor(pre.size / pre.crop_pct)), interpolation=mode)]
    if augment:
        steps += [T.RandomHorizontalFlip(), T.RandomRotation(10, interpolation=T.InterpolationMode.BILINEAR)]
    steps += [T.CenterCrop(pre.size), T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    return T.Compose(steps)


class TableDataset(Dataset):
    """Rows of a SampleTable as (image tensor, target, row position)."""

    def __init__(self, table: SampleTable, rows: np.ndarray, transform: T.Compose) -> None:
        self.table, self.rows, self.transform = table, np.asarray(rows), transform
        self.targets = table.frame["target"].to_numpy()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        row = int(self.rows[i])
        image = Image.fromarray(to_rgb(self.table.pixels(row)))
        return self.transform(image), int(self.targets[row]), row


def default_workers() -> int:
    """Half the cores, at most 8: decoding runs beside the model without starving it."""
    return min(8, max(0, (os.cpu_count() or 1) // 2))


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, workers: int, device: torch.device,
                seed: int = 0) -> DataLoader:
    """A DataLoader with seeded shuffling; pinned memory and prefetching only on CUDA."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      pin_memory=device.type == "cuda", generator=generator,
                      persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)
