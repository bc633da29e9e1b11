"""`medtransfer predict`: class probabilities for new images from a finished run."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import torch

from medtransfer.config import Device, TrainConfig
from medtransfer.data.file_kinds import IMAGE_SUFFIXES
from medtransfer.data.folder import walk_images  # the folder dataset's own rule for image files
from medtransfer.data.images import read_image
from medtransfer.engine.device import pick_device
from medtransfer.engine.finetune import Classifier
from medtransfer.engine.heads import HeadModule
from medtransfer.engine.knn import KNNModule
from medtransfer.engine.probes import probe_entry
from medtransfer.engine.pipeline import InputPipeline, crop_transform, decode_image
from medtransfer.errors import UserError
from medtransfer.models.backbone import build_backbone
from medtransfer.models.weights import check_tensors, load_run_weights, read_tensors
from medtransfer.rundir import DONE, RunDir


def load_model(run_dir: Path) -> tuple[torch.nn.Module, TrainConfig, list[str]]:
    """Rebuild a finished run's model: the fine-tuned weights, or the backbone's weights plus the trained head.

    Every weight file is checked as a --weights checkpoint is: read without unpickling, keys and shapes exact,
    floating point and finite.
    """
    run = RunDir(run_dir)
    if not run.is_complete():
        raise UserError(str(run_dir), f"is not a finished run (no {DONE})", "pass a run directory that completed")
    # Only the class names are read from the metrics: a run written by an older version still predicts.
    saved, cfg, classes = run.config(), run.train_config(), run.classes()
    if cfg.mode == "finetune":  # every weight is in the run's "model" weights: no need for the original source
        model = Classifier(build_backbone(cfg.backbone, "none", cfg.image_size, cfg.pooling, cfg.seed),
                           len(classes), cfg.head)
        load_run_weights(model, run.weights_path("model"))
        return model.eval(), cfg, classes
    backbone = build_backbone(cfg.backbone, cfg.weights, cfg.image_size, cfg.pooling, cfg.seed)
    trained = saved.get("weights_identity")
    if backbone.weights_id != trained:
        if str(trained).startswith("hub:"):  # the hub's main moved on, or the cache holds another snapshot
            repo, _, commit = str(trained).removeprefix("hub:").partition("@")
            raise UserError(f"--backbone {cfg.backbone}", f"the run was trained on {trained}, the cache now gives "
                            f"{backbone.weights_id}", f"put that commit back in the cache (hf download {repo} "
                            f"--revision {commit.partition('/')[0]}) and point its main ref at it")
        raise UserError(cfg.weights, "differs from the backbone weights this run was trained on",
                        "restore the original checkpoint file")
    kind = probe_entry(cfg).weights_kind  # what the run's probe saved, as the probe registry declares it
    if kind == "knn":  # the kNN "head" is the stored train features and labels
        head: torch.nn.Module = _knn_head(run.weights_path(kind))
    else:
        head = HeadModule(backbone.num_features, len(classes), cfg.head)
        load_run_weights(head, run.weights_path(kind))
    return torch.nn.Sequential(backbone, head).eval(), cfg, classes


def _knn_head(path: Path) -> KNNModule:
    """The kNN bank: its shapes give the sizes, so it is checked for its keys, then as any weights."""
    if not path.is_file():
        raise UserError(str(path), "is missing from the run directory", "rerun the training (the run is incomplete)")
    state = read_tensors(path)
    wanted = set(KNNModule(1, 1, 2).state_dict())
    if not isinstance(state, dict) or set(state) != wanted:
        raise UserError(str(path), f"does not hold a kNN bank (keys {sorted(wanted)})", "rerun the training")
    check_tensors(state, None, str(path))
    return KNNModule.from_state_dict(state)


def _device(name: str) -> torch.device:
    """The device to predict on: one of the run settings' choices, and present."""
    choices = get_args(Device)
    if name not in choices:
        raise UserError(f"device {name!r}", "is not a device choice", f"use one of {', '.join(choices)}")
    return pick_device(name)


def expand_images(paths: list[Path]) -> list[Path]:
    """The image files to predict: files as given, and a folder's images at any depth in sorted order (hidden
    files and folders skipped, as an image-folder dataset is read); a folder without images is refused."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            found.append(path)  # a missing or unreadable file is refused by name when it is read
            continue
        inside = sorted(walk_images(path))
        if not inside:
            raise UserError(str(path), f"is a folder holding no image files ({', '.join(sorted(IMAGE_SUFFIXES))})",
                            "pass image files, or a folder that holds some")
        found += inside
    return found


@torch.inference_mode()
def predict(run_dir: Path, images: list[Path], device: Device = "auto", batch_size: int = 32) -> pd.DataFrame:
    """One row per image: its path, the predicted class, and prob_<class> columns; a folder stands for the images
    inside it (expand_images)."""
    target = _device(device)  # before the model is built: a bad device fails at once
    images = expand_images(images)  # before the model too: an empty folder fails at once
    model, cfg, classes = load_model(Path(run_dir))
    model.to(target)
    preprocess = model.backbone.preprocess if isinstance(model, Classifier) else model[0].preprocess
    transform, inputs = crop_transform(preprocess), InputPipeline(preprocess, target)
    probs = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([decode_image(read_image(p), transform) for p in images[start:start + batch_size]])
        probs.append(model(inputs(batch)).float().softmax(1).cpu().numpy())
    prob = np.concatenate(probs) if probs else np.zeros((0, len(classes)))
    frame = pd.DataFrame({"image": [str(p) for p in images], "predicted": [classes[k] for k in prob.argmax(1)]})
    for k, name in enumerate(classes):
        frame[f"prob_{name}"] = prob[:, k]
    return frame
