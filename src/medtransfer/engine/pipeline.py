"""From a SampleTable's pixels to normalised tensors, with the backbone's own preprocessing.

Loaders yield uint8 batches (decoded, resized and centre-cropped, or read from the image cache). Conversion to
float, augmentation and normalisation happen on the batch, on the device (`InputPipeline`), so the cached and
the uncached path feed the model exactly the same tensors and the GPU does the arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler
from torchvision import transforms as T

from medtransfer.data.table import SampleTable, to_rgb
from medtransfer.models.backbone import Preprocess

INTERPOLATION = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
                 "nearest": T.InterpolationMode.NEAREST}
MAX_ROTATION_DEGREES = 10.0


def crop_transform(pre: Preprocess) -> T.Compose:
    """timm-style eval geometry (resize to size/crop_pct, centre crop) to a uint8 (3, size, size) tensor."""
    mode = INTERPOLATION.get(pre.interpolation, T.InterpolationMode.BILINEAR)
    return T.Compose([T.Resize(int(math.floor(pre.size / pre.crop_pct)), interpolation=mode),
                      T.CenterCrop(pre.size), T.PILToTensor()])


def decode_image(pixels: np.ndarray, transform: T.Compose) -> torch.Tensor:
    """Decoded pixels (grey, RGB or RGBA) as the uint8 model-size RGB tensor."""
    return transform(Image.fromarray(to_rgb(pixels)))


class TableDataset(Dataset):
    """Rows of a SampleTable, decoded on the fly, as (uint8 image, target, row position)."""

    def __init__(self, table: SampleTable, rows: np.ndarray, transform: T.Compose) -> None:
        self.table, self.rows, self.transform = table, np.asarray(rows), transform
        self.targets = table.frame["target"].to_numpy()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        row = int(self.rows[i])
        return decode_image(self.table.pixels(row), self.transform), int(self.targets[row]), row


class CachedDataset(Dataset):
    """Batches of rows read from the uint8 image cache: indexed by a list of positions, one read per batch.

    The memory map is opened lazily in each process: pickling it to a DataLoader worker would copy the data.
    """

    def __init__(self, path: Path, rows: np.ndarray, targets: np.ndarray) -> None:
        self.path, self.rows, self.targets = Path(path), np.asarray(rows), np.asarray(targets)
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}

    def __getitem__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        # Rows stay in the sampler's order, so a run gives the same batches with or without the cache.
        rows = self.rows[np.asarray(positions)]
        images = torch.from_numpy(np.ascontiguousarray(self._images[rows]))
        return images, torch.from_numpy(self.targets[rows]), torch.from_numpy(rows)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, workers: int, device: torch.device,
                seed: int = 0) -> DataLoader:
    """A DataLoader with seeded shuffling; pinned memory and prefetching only on CUDA."""
    generator = torch.Generator().manual_seed(seed)
    common = {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0,
              "prefetch_factor": 4 if workers > 0 else None, "generator": generator}
    if isinstance(dataset, CachedDataset):  # the dataset reads whole batches: the sampler hands it index lists
        # The same generator as DataLoader(shuffle=True) would use, drawn in the same order: identical batches.
        order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        return DataLoader(dataset, batch_size=None, sampler=BatchSampler(order, batch_size, drop_last=False),
                          **common)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, **common)


def augment_batch(x: torch.Tensor, generator: torch.Generator,
                  max_degrees: float = MAX_ROTATION_DEGREES) -> torch.Tensor:
    """Per-sample random horizontal flip and rotation within ±max_degrees, as one affine resampling of the batch."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([cos * sign, -sin, zero], 1), torch.stack([sin * sign, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class InputPipeline:
    """uint8 batches → float model input on the device: optional augmentation, then normalisation."""

    def __init__(self, pre: Preprocess, device: torch.device, augment: bool = False, seed: int = 0) -> None:
        self.device, self.augment = device, augment
        # mean/std scaled to the 0–255 range: one subtract and one divide, no separate /255 pass.
        self.mean = torch.tensor(pre.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(pre.std, device=device).view(1, 3, 1, 1) * 255.0
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float32 (B, 3, H, W), channels-last on CUDA."""
        x = images.to(self.device, non_blocking=True).float()
        if self.augment:
            x = augment_batch(x, self.generator)
        x = (x - self.mean).div_(self.std)  # in place on the fresh tensor: one allocation fewer per batch
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x


@dataclass
class DataPath:
    """Where a run's batches come from: the image cache when there is one, else decoding on the fly."""

    table: SampleTable
    pre: Preprocess
    device: torch.device
    workers: int
    images: Path | None = None  # the image cache's .npy file

    def loader(self, rows: np.ndarray, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """Batches of (uint8 images, targets, row positions) for the given rows."""
        targets = self.table.frame["target"].to_numpy()
        if self.images is None:
            dataset = TableDataset(self.table, rows, crop_transform(self.pre))
            return make_loader(dataset, batch_size, shuffle, self.workers, self.device, seed)
        # Reading a cached batch is one memory-map slice, cheaper than shipping it from a worker process, which
        # would also take a core from the model; on CUDA workers still prefetch into pinned memory.
        workers = self.workers if self.device.type == "cuda" else 0
        return make_loader(CachedDataset(self.images, rows, targets), batch_size, shuffle, workers, self.device, seed)
