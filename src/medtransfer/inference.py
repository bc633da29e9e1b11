"""`medtransfer predict`: class probabilities for new images from a finished run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from pydantic import ValidationError

from medtransfer.config import TrainConfig
from medtransfer.data.images import read_image
from medtransfer.engine.device import pick_device
from medtransfer.engine.finetune import Classifier
from medtransfer.engine.heads import HeadModule
from medtransfer.engine.knn import KNNModule
from medtransfer.engine.pipeline import InputPipeline, crop_transform, decode_image
from medtransfer.errors import UserError
from medtransfer.models.backbone import build_backbone
from medtransfer.models.weights import check_tensors, load_run_weights, read_tensors, weights_identity
from medtransfer.rundir import is_complete


def _run_record(run_dir: Path) -> tuple[dict, list[str]]:
    """The run's config.yaml and its classes from metrics.json; a damaged file is the user's, named with the fix."""
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        classes = json.loads((run_dir / "metrics.json").read_text())["classes"]
    except (OSError, yaml.YAMLError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(str(run_dir), f"has an unreadable config.yaml or metrics.json ({type(exc).__name__})",
                        "pass a run directory as `medtransfer train` wrote it, or rerun the training") from None
    if not isinstance(saved, dict) or not isinstance(classes, list) or len(classes) < 2:
        raise UserError(str(run_dir), "has a config.yaml or metrics.json without a run's settings and classes",
                        "pass a run directory as `medtransfer train` wrote it, or rerun the training")
    return saved, [str(c) for c in classes]


def load_model(run_dir: Path) -> tuple[torch.nn.Module, TrainConfig, list[str]]:
    """Rebuild a finished run's model: the fine-tuned weights, or the backbone's weights plus the trained head.

    Every weight file is checked as a --weights checkpoint is: read without unpickling, keys and shapes exact,
    floating point and finite.
    """
    if not is_complete(run_dir):
        raise UserError(str(run_dir), "is not a finished run (no DONE)", "pass a run directory that completed")
    saved, classes = _run_record(run_dir)
    try:
        cfg = TrainConfig(**{k: v for k, v in saved.items() if k in TrainConfig.model_fields})
    except ValidationError as exc:
        raise UserError(str(run_dir / "config.yaml"), f"is not a valid run configuration ({exc.error_count()} "
                        "problem(s))", "rerun the training") from None
    if cfg.mode == "finetune":  # every weight is in model.safetensors: no need for the original source
        model = Classifier(build_backbone(cfg.backbone, "none", cfg.image_size, cfg.pooling, cfg.seed),
                           len(classes), cfg.head)
        load_run_weights(model, run_dir / "model.safetensors")
        return model.eval(), cfg, classes
    backbone = build_backbone(cfg.backbone, cfg.weights, cfg.image_size, cfg.pooling, cfg.seed)
    if weights_identity(cfg.weights, backbone.timm_name, cfg.seed) != saved.get("weights_identity"):
        raise UserError(cfg.weights, "differs from the backbone weights this run was trained on",
                        "restore the original checkpoint file")
    if cfg.head == "knn":  # the kNN "head" is the stored train features and labels
        head: torch.nn.Module = _knn_head(run_dir / "knn.safetensors")
    else:
        head = HeadModule(backbone.num_features, len(classes), cfg.head)
        load_run_weights(head, run_dir / "head.safetensors")
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


@torch.inference_mode()
def predict_images(run_dir: Path, images: list[Path], device_name: str = "auto", batch_size: int = 32) -> pd.DataFrame:
    """One row per image: path, predicted class, and prob_<class> columns."""
    model, cfg, classes = load_model(Path(run_dir))
    device = pick_device(device_name)
    model.to(device)
    preprocess = model.backbone.preprocess if isinstance(model, Classifier) else model[0].preprocess
    transform, inputs = crop_transform(preprocess), InputPipeline(preprocess, device)
    probs = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([decode_image(read_image(p), transform) for p in images[start:start + batch_size]])
        probs.append(model(inputs(batch)).float().softmax(1).cpu().numpy())
    prob = np.concatenate(probs) if probs else np.zeros((0, len(classes)))
    frame = pd.DataFrame({"image": [str(p) for p in images], "predicted": [classes[k] for k in prob.argmax(1)]})
    for k, name in enumerate(classes):
        frame[f"prob_{name}"] = prob[:, k]
    return frame
