"""memory-scaling: peak anonymous memory (RssAnon, sampled) of frozen extraction on 2k vs 20k synthetic 64px images.

Each size runs in a fresh process, so one run's heap cannot hide the other's. The image and feature caches are
memory maps: their pages belong to files and the kernel drops them at will, so RssAnon leaves them out.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def child(n: int, size: int, cache: Path) -> dict:
    """Run in the fresh process: image cache + feature extraction of n synthetic images, with RssAnon sampled."""
    from bench.common import PeakSampler, device, rss_anon_kb
    from medtransfer.data.synthetic import load_synthetic
    from medtransfer.engine.features import cached_features, extract, feature_cache, feature_key
    from medtransfer.engine.image_cache import cached_images
    from medtransfer.engine.pipeline import DataPath, InputPipeline
    from medtransfer.models.backbone import build_backbone

    dev = device()
    table = load_synthetic(f"synthetic:n={n},size={size}")
    backbone = build_backbone("resnet18", "none", size).eval().to(dev)
    before = rss_anon_kb()
    start = time.perf_counter()
    with PeakSampler() as sampler:
        path, _ = cached_images(cache, table, backbone.preprocess, workers=1)
        data = DataPath(table, backbone.preprocess, dev, 1, path)

        def fill(out: np.ndarray) -> None:
            extract(backbone, data.loader(np.arange(n), 256), InputPipeline(backbone.preprocess, dev), out)

        features, _ = cached_features(feature_cache(cache), feature_key(backbone, "none", table, dev),
                                      (n, backbone.num_features), fill)
        assert np.isfinite(np.asarray(features[-1], dtype=np.float32)).all()
    return {"n": n, "rss_anon_before_kb": before, "peak_rss_anon_kb": sampler.peak_kb,
            "seconds": time.perf_counter() - start}


def measure(n: int, size: int) -> dict:
    """One size in its own interpreter."""
    cache = Path(tempfile.mkdtemp(prefix=f"bench-memory-{n}-"))
    code = f"import json; from bench.memory_scaling import child; print(json.dumps(child({n}, {size}, {str(cache)!r})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(smoke: bool = False) -> dict:
    """Peak RssAnon at both sizes and their ratio."""
    small, large, size = (40, 400, 16) if smoke else (2000, 20000, 64)
    a, b = measure(small, size), measure(large, size)
    return {"image_size": size, "small": a, "large": b, "ratio": b["peak_rss_anon_kb"] / a["peak_rss_anon_kb"]}
