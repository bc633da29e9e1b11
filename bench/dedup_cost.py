"""dedup-cost: what the duplicate hash pass adds to a frozen run's first pass, and the evidence for its threshold.

Both sides are `medtransfer.runner.train` on the same 5,000 JPEGs (600x450, made from the shared HAM10000 subset by
random crops, flips and colour changes, written to a temporary folder), frozen resnet18 at 224 px, each with a fresh
empty cache: the baseline has the hash pass switched off, the other side is the run as shipped (hashing every image,
searching all pairs, clustering). The files are read once before timing, so neither side pays for a cold page cache.
Beside the A/B wall times, the hashed run's own record says how long its hash pass took inside it.

The threshold evidence: perceptual-hash distances between each HAM image and its resized / re-encoded copies, and
the smallest distance among 500 distinct real images (the 124 HAM images and 376 BreastMNIST images no two of which
correlate at r >= 0.9), with the number of pairs BreastMNIST itself holds at the threshold.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image, ImageEnhance

from bench.common import SHARED_DATA, alternate, device, summary
from medtransfer import runner
from medtransfer.config import TrainConfig
from medtransfer.data.dedup import Deduplicated
from medtransfer.data.duplicate_hashes import pixel_hashes
from medtransfer.data.duplicate_scan import NEAR_THRESHOLD, DuplicateScan, near_pairs

HAM = SHARED_DATA / "ham10000_subset"


def make_images(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """n class-folder JPEGs: HAM images (by their dx label) cropped, flipped and recoloured at random, else noise."""
    rng = np.random.default_rng(seed)
    photos: list[tuple[str, Image.Image]] = []
    if (HAM / "HAM10000_images").is_dir():
        labels = dict(line.split(",")[1:3] for line in (HAM / "subset_metadata.csv").read_text().splitlines()[1:])
        files = sorted((HAM / "HAM10000_images").glob("*.jpg"))
        photos = [(labels[p.stem], Image.open(p).convert("RGB")) for p in files]
    for k in range(n):
        if photos:
            label, photo = photos[k % len(photos)]
            w, h = photo.size
            scale = rng.uniform(0.7, 1.0)
            cw, ch = int(w * scale), int(h * scale)
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            image = photo.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BILINEAR)
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            image = ImageEnhance.Color(ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))).enhance(
                rng.uniform(0.8, 1.2))
        else:  # no shared data: smooth colour fields of the same size
            label = "ab"[k % 2]
            low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            image = Image.fromarray(low).resize(size, Image.Resampling.BICUBIC)
        (folder / label).mkdir(parents=True, exist_ok=True)
        image.save(folder / label / f"img_{k:05d}.jpg", quality=90)
    return folder


def _no_hash_pass(cfg: TrainConfig, table, reporter) -> Deduplicated:
    """The baseline: the run with no duplicate pass at all (an empty scan, nothing hashed)."""
    none = np.empty((0, 2), dtype=np.int64)
    scan = DuplicateScan(table.frame["sample_id"].astype(str).to_numpy(), none, none, np.empty(0, dtype=np.int64))
    return Deduplicated(table, scan, "warn", "benchmark baseline: not scanned")


def distinct_rows(images: np.ndarray, max_correlation: float = 0.9) -> list[int]:
    """Rows whose pixel correlation with every earlier kept row is below `max_correlation`: images "distinct" by a
    measure independent of the perceptual hash, so that the hash can be tested on them."""
    flat = images.reshape(len(images), -1).astype(float)
    flat = (flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True)
    corr = flat @ flat.T / flat.shape[1]
    keep: list[int] = []
    for i in range(len(images)):
        if not keep or corr[i, keep].max() < max_correlation:
            keep.append(i)
    return keep


def _distance(a: int, b: int) -> int:
    return int(np.bitwise_count(np.uint64(a) ^ np.uint64(b)))


def threshold_evidence(shared: Path) -> dict:
    """Distances of copies to their originals, and the nearest pair among 500 distinct real images."""
    files = sorted((shared / "ham10000_subset" / "HAM10000_images").glob("*.jpg"))
    ham = [np.asarray(Image.open(p).convert("RGB")) for p in files]

    def jpeg(image: Image.Image, quality: int) -> np.ndarray:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    def scaled(im: Image.Image, factor: float, how: Image.Resampling) -> np.ndarray:
        return np.asarray(im.resize((int(im.width * factor), int(im.height * factor)), how))

    copies = {"resized 1/2": lambda im: scaled(im, 0.5, Image.Resampling.BILINEAR),
              "resized 1/4": lambda im: scaled(im, 0.25, Image.Resampling.BICUBIC),
              "resized 224x224": lambda im: np.asarray(im.resize((224, 224))),
              "resized x2": lambda im: scaled(im, 2, Image.Resampling.BICUBIC),
              "jpeg q95": lambda im: jpeg(im, 95), "jpeg q75": lambda im: jpeg(im, 75),
              "jpeg q50": lambda im: jpeg(im, 50), "jpeg q30": lambda im: jpeg(im, 30),
              "1/2 + jpeg q70": lambda im: jpeg(im.resize((im.width // 2, im.height // 2)), 70),
              "grey": lambda im: np.asarray(im.convert("L"))}
    distances: dict[str, list[int]] = {name: [] for name in copies}
    for pixels in ham:
        code = pixel_hashes(pixels)[1]
        for name, make in copies.items():
            distances[name].append(_distance(code, pixel_hashes(make(Image.fromarray(pixels)))[1]))
    data = np.load(shared / "medmnist" / "breastmnist.npz")
    breast = np.concatenate([data[f"{s}_images"] for s in ("train", "val", "test")])
    keep = distinct_rows(breast)
    small = {"upscaled to 224": lambda im: np.asarray(im.resize((224, 224), Image.Resampling.BILINEAR)),
             "resized 21x21": lambda im: np.asarray(im.resize((21, 21), Image.Resampling.LANCZOS)),
             "jpeg q75": lambda im: jpeg(im, 75)}
    small_distances: dict[str, list[int]] = {name: [] for name in small}
    for pixels in breast:  # small grey ultrasound frames: the other end of the range of inputs
        code = pixel_hashes(pixels)[1]
        for name, make in small.items():
            small_distances[name].append(_distance(code, pixel_hashes(make(Image.fromarray(pixels)))[1]))
    distinct = ham + list(breast[keep[:500 - len(ham)]])
    codes = np.array([pixel_hashes(p)[1] for p in distinct], dtype=np.uint64)
    _, nearest = near_pairs(codes, 64)
    all_breast = np.array([pixel_hashes(p)[1] for p in breast], dtype=np.uint64)
    return {"threshold": NEAR_THRESHOLD, "copies_max_distance": {k: max(v) for k, v in distances.items()},
            "copies_n": len(ham), "breastmnist_copies_max_distance": {k: max(v) for k, v in small_distances.items()},
            "breastmnist_copies_n": len(breast), "distinct_n": len(distinct),
            "distinct_min_distance": int(nearest.min()),
            "distinct_pairs_within_12": int((nearest <= 12).sum()),
            "breastmnist_pairs_at_threshold": int(len(near_pairs(all_breast, NEAR_THRESHOLD)[0]))}


def run(smoke: bool = False) -> dict:
    """Wall time of a cold frozen run with and without the hash pass; the hash pass's share; threshold evidence."""
    n, size, image_size = (60, (64, 48), 32) if smoke else (5000, (600, 450), 224)
    work = Path(tempfile.mkdtemp(prefix="bench-dedup-"))
    data = make_images(work / "data", n, size)
    for path in data.rglob("*.jpg"):  # into the page cache: neither side reads cold files
        path.read_bytes()
    base = {"data": str(data), "backbone": "resnet18", "weights": "none", "image_size": image_size, "mode": "frozen",
            "epochs": 2 if smoke else 100, "bootstrap": 100 if smoke else 500, "device": device().type,
            "allow_missing_classes": True}
    counter = iter(range(10_000))
    records: list[dict] = []
    totals: dict[str, list[float]] = {"without hash pass": [], "with hash pass": []}

    def once(name: str) -> None:
        k = next(counter)  # a fresh cache and run folder each time: both sides start cold
        cfg = TrainConfig(**base, cache_dir=str(work / f"cache{k}"), out=str(work / f"run{k}"))
        metrics = runner.train(cfg).metrics.to_json()
        totals[name].append(metrics["timing"]["total_seconds"])
        if name == "with hash pass":
            records.append({**metrics["duplicates"], "hash_seconds": metrics["timing"]["hash_seconds"]})

    def without() -> None:
        with mock.patch.object(runner, "deduplicate", _no_hash_pass):
            once("without hash pass")

    times = alternate({"without hash pass": without, "with hash pass": lambda: once("with hash pass")},
                      repeats=1, warmup=0)
    medians = summary(times)["median_s"]
    hash_seconds = records[-1]["hash_seconds"]
    with_total = totals["with hash pass"][-1]
    result = {"data": f"{n} JPEGs {size[0]}x{size[1]} made from ham10000_subset" if (HAM / "HAM10000_images").is_dir()
              else f"{n} generated JPEGs {size[0]}x{size[1]}", "n": n, "backbone": "resnet18", "weights": "none",
              "image_size": image_size, "workers": runner.default_workers(), **summary(times),
              "added_fraction": medians["with hash pass"] / medians["without hash pass"] - 1,
              "hash_seconds": hash_seconds, "run_total_seconds": totals,
              "hash_share_in_run": hash_seconds / (with_total - hash_seconds),
              "pairs_found": {"exact": records[-1]["exact_pairs"], "near": records[-1]["near_pairs"]}}
    if not smoke and (SHARED_DATA / "medmnist" / "breastmnist.npz").is_file():
        result["threshold_evidence"] = threshold_evidence(SHARED_DATA)
    return result
