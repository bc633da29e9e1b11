"""head-sweep: 16 heads (4 lr × 4 weight decay) trained together from one feature cache vs one head, same
features, epochs and batch size."""

from __future__ import annotations

import numpy as np
import torch

from bench.common import alternate, breastmnist_64, device, summary
from medtransfer.config import TrainConfig, from_config
from medtransfer.data.npz import load_npz
from medtransfer.data.splits import SplitPlan, assign_splits
from medtransfer.data.synthetic import load_synthetic
from medtransfer.engine.features import extract
from medtransfer.engine.pipeline import DataPath, InputPipeline
from medtransfer.engine.probes import make_probe
from medtransfer.models.backbone import build_backbone


def features_and_splits(smoke: bool) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """resnet18 features of BreastMNIST 64px (synthetic when smoke or without the shared data), and the split."""
    data = breastmnist_64()
    table = load_synthetic("synthetic:n=40,size=16") if smoke or data is None else load_npz(data)
    size = 32 if smoke or data is None else 64
    backbone = build_backbone("resnet18", "none", size)
    out = np.zeros((len(table), backbone.num_features), dtype=np.float32)
    dev = device()
    extract(backbone, DataPath(table, backbone.preprocess, dev, 0).loader(np.arange(len(table)), 256),
            InputPipeline(backbone.preprocess, dev), out)
    frame = assign_splits(table, from_config(SplitPlan, TrainConfig(data="synthetic:")))
    rows = {s: np.flatnonzero(frame["split"].to_numpy() == s) for s in ("train", "val", "test")}
    return out, table.frame["target"].to_numpy(), rows


def run(smoke: bool = False) -> dict:
    """Median fit time of one head and of the 16-head sweep, and their ratio."""
    x, y, rows = features_and_splits(smoke)
    epochs, repeats = (5, 1) if smoke else (100, 5)
    n_classes = int(y.max()) + 1
    train, val = (x[rows["train"]], y[rows["train"]]), (x[rows["val"]], y[rows["val"]])
    out = {"n_train": len(rows["train"]), "n_val": len(rows["val"]), "dim": x.shape[1], "epochs": epochs,
           "threads": torch.get_num_threads()}
    # Linear heads (DINOv2's linear evaluation) are the headline; 16 MLP heads are 16x the arithmetic, reported too.
    for kind in ("linear", "mlp"):
        # A constant lr, as the benchmark has always timed; the rest are the run defaults.
        cfg = TrainConfig(data="synthetic:", head=kind, epochs=epochs, schedule="none")
        fit = {"one head": make_probe(cfg), "16-head sweep": make_probe(cfg.model_copy(update={"head_sweep": True}))}
        times = alternate({name: (lambda h=head: h.fit(*train, *val, n_classes)) for name, head in fit.items()},
                          repeats)
        stats = summary(times)
        sweep = fit["16-head sweep"]
        result = {**stats, "heads": len(sweep.table_), "chosen": sweep.choice_,
                  "ratio": stats["median_s"]["16-head sweep"] / stats["median_s"]["one head"]}
        out.update(result if kind == "linear" else {"mlp": result})
    return out
