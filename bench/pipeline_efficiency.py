"""pipeline-efficiency: extraction images/s through the project's data path (decoding PNG files, and reading the
image cache) ÷ raw `model(x)` images/s on pre-made normalised tensors, same model, batch size and images."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import alternate, breastmnist_64, device, summary
from medtransfer.data.folder import load_folder
from medtransfer.engine.features import extract
from medtransfer.engine.image_cache import cached_images
from medtransfer.engine.pipeline import DataPath, InputPipeline
from medtransfer.models.backbone import build_backbone


def write_png_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """A class-folder tree of PNG files: the usual way a user's images arrive."""
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / f"class{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return root


def run(smoke: bool = False) -> dict:
    """Images/s of the three paths and the two efficiencies (project ÷ raw)."""
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    data = breastmnist_64()
    if smoke or data is None:
        rng = np.random.default_rng(0)
        images, labels, size, batch, repeats = rng.integers(0, 256, (24, 20, 20), np.uint8), np.arange(24) % 2, 32, 8, 1
    else:
        npz = np.load(data)
        images = np.concatenate([npz[f"{s}_images"] for s in ("train", "val", "test")])
        labels = np.concatenate([npz[f"{s}_labels"].ravel() for s in ("train", "val", "test")])
        size, batch, repeats = 64, 256, 7
    table = load_folder(write_png_folder(work / "png", images, labels))
    dev = device()
    backbone = build_backbone("resnet18", "none", size).eval().to(dev)
    pre, rows, n = backbone.preprocess, np.arange(len(table)), len(table)
    cache_path, _ = cached_images(work / "cache", table, pre, workers=1)
    from_files, from_cache = DataPath(table, pre, dev, 1), DataPath(table, pre, dev, 1, cache_path)
    inputs = InputPipeline(pre, dev)
    out = np.zeros((n, backbone.num_features), dtype=np.float16)
    made = [inputs(torch.from_numpy(np.array(np.load(cache_path, mmap_mode="r")[i:i + batch])))
            for i in range(0, n, batch)]

    @torch.inference_mode()
    def raw() -> None:
        for x in made:
            backbone(x)

    times = alternate({"raw model(x)": raw,
                       "project, image cache": lambda: extract(backbone, from_cache.loader(rows, batch), inputs, out),
                       "project, PNG files": lambda: extract(backbone, from_files.loader(rows, batch), inputs, out)},
                      repeats)
    stats = summary(times)
    per_second = {name: n / seconds for name, seconds in stats["median_s"].items()}
    raw_rate = per_second["raw model(x)"]
    return {"images": n, "image_size": size, "batch_size": batch, "workers": 1, **stats,
            "images_per_second": per_second,
            "efficiency_image_cache": per_second["project, image cache"] / raw_rate,
            "efficiency_files": per_second["project, PNG files"] / raw_rate}
