"""The torch half of a run: backbone, then cached features and a head, or fine-tuning; imported once the data is known
good, so that bad input fails before torch and the models are loaded (seconds on a small machine)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors.torch import save_file

from medtransfer.config import TrainConfig, from_config
from medtransfer.data.external import ExternalSet
from medtransfer.data.table import SampleTable
from medtransfer.engine.cache import cache_root
from medtransfer.engine.device import pick_device, seed_everything
from medtransfer.engine.features import cached_features, extract_table, feature_cache, feature_key
from medtransfer.engine.finetune import Classifier, FinetuneSettings, finetune, predict_rows
from medtransfer.engine.image_cache import cached_images
from medtransfer.engine.pipeline import DataPath
from medtransfer.engine.probes import make_probe, probe_entry
from medtransfer.evaluation.prediction_tables import EVAL_SPLITS
from medtransfer.models.adapt import add_lora, enable_grad_checkpointing, freeze_blocks, frozen_norm_eval, merge_lora
from medtransfer.models.backbone import Backbone, build_backbone, check_weights
from medtransfer.progress import Reporter, shown_epochs
from medtransfer.provenance import device_name
from medtransfer.rundir import RunWriter, WeightsKind

EXTRACT_BATCH_CUDA = 1024  # first try; halved on out-of-memory


@dataclass
class Fitted:
    """What a mode hands to evaluation: val/test probabilities, the training record and the weights to save."""

    probs: dict[str, np.ndarray]
    history: list[dict]
    best_epoch: int
    tensors: dict[WeightsKind, dict[str, torch.Tensor]]
    timing: dict
    extra: dict = field(default_factory=dict)  # mode-specific results for metrics.json (e.g. the head sweep)
    resolved: dict = field(default_factory=dict)  # what the backbone resolved, for config.yaml
    external: dict[str, np.ndarray] = field(default_factory=dict)  # each external set's probabilities, in its order
    device: str = ""  # where it ran, with the hardware's name (environment.json; config.yaml keeps --device)

    def save_weights(self, writer: RunWriter) -> None:
        """The head's or the model's tensors as safetensors files of the run."""
        for kind, state in self.tensors.items():
            save_file(state, str(writer.weights_path(kind)))


def resource_use(backbone: Backbone, device: torch.device) -> dict:
    """Parameters, and peak memory: CUDA allocator peak on GPU, else the process's peak resident set."""
    n_params = sum(p.numel() for p in backbone.parameters())
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    # Float reductions depend on the thread count: recorded so a reproduction can match it.
    return {"n_params": int(n_params), "peak_memory_mb": round(peak, 1), "threads": torch.get_num_threads()}


def _data_path(cfg: TrainConfig, table: SampleTable, backbone: Backbone, device: torch.device,
               reporter: Reporter) -> tuple[DataPath, dict]:
    """Batches from the decoded-image cache (built on first use) or, with --no-image-cache, from the files."""
    pre = backbone.preprocess
    if not cfg.image_cache:
        return DataPath(table, pre, device, cfg.workers), {}
    with reporter.task(f"decode images ({pre.size}px)", len(table), "images") as advance:
        path, timing = cached_images(cache_root(cfg.cache_dir), table, pre, cfg.workers, advance)
    return DataPath(table, pre, device, cfg.workers, path), timing


def extract_batch(cfg: TrainConfig, device: torch.device) -> int:
    """The first batch size of a frozen run's feature extraction."""
    # Inference keeps no activations for backward: on a GPU far larger batches fit than for training.
    return EXTRACT_BATCH_CUDA if device.type == "cuda" else max(cfg.batch_size, 64)


def run_feature_key(cfg: TrainConfig, backbone: Backbone, table: SampleTable, device: torch.device) -> dict:
    """The feature-cache key of a frozen run (its model part is what a study groups runs by: executors.cache_group)."""
    return feature_key(backbone, backbone.weights_id, table, device)


def table_features(cfg: TrainConfig, backbone: Backbone, table: SampleTable, device: torch.device,
                   reporter: Reporter, label: str = "features") -> tuple[np.ndarray, dict]:
    """Every row's features from the feature cache, extracted into it on a miss; with the cache's timing."""
    key = run_feature_key(cfg, backbone, table, device)
    image_timing: dict = {}

    def fill(out: np.ndarray) -> None:
        images = cache_root(cfg.cache_dir) if cfg.image_cache else None
        image_timing.update(extract_table(backbone, table, out, device, cfg.workers, extract_batch(cfg, device), images,
                                          lambda b: reporter.task(f"extract {backbone.name} (batch {b})",
                                                                  len(table), "images")))

    features, timing = cached_features(feature_cache(cache_root(cfg.cache_dir)), key,
                                       (len(table), backbone.num_features), fill)
    timing.update(image_timing)
    if not timing["cache_hit"]:
        timing["images_per_second"] = round(len(table) / max(timing["extract_seconds"], 1e-9), 2)
    reporter.log(f"{label}: {'cache hit' if timing['cache_hit'] else 'extracted'} ({timing['cache_entry']})")
    for warning in timing.get("cache_warnings", []) + timing.get("image_cache_warnings", []):
        reporter.log(f"warning: {warning}")  # also kept in metrics.json's timing
    return features, timing


def _frozen(cfg: TrainConfig, backbone: Backbone, table: SampleTable, rows: dict[str, np.ndarray],
            device: torch.device, reporter: Reporter, externals: list[ExternalSet]) -> Fitted:
    features, timing = table_features(cfg, backbone, table, device, reporter)
    y = table.frame["target"].to_numpy()
    head = make_probe(cfg)
    start = time.perf_counter()
    train_x = np.asarray(features[rows["train"]], dtype=np.float32)  # heads train on features held in memory
    head.fit(train_x, y[rows["train"]], features[rows["val"]], y[rows["val"]], len(table.classes))
    timing["train_seconds"] = round(time.perf_counter() - start, 3)
    report_head_history(reporter, head.history_, head.best_epoch_, cfg)
    probs = {s: head.predict_proba(features[rows[s]]) for s in EVAL_SPLITS}
    # Each external set's features go into the same cache, under the key of its own data.
    external = {}
    for ext in externals:
        ext_features, ext_timing = table_features(cfg, backbone, ext.table, device, reporter,
                                                  f"external set {ext.name} features")
        external[ext.name] = head.predict_proba(ext_features)
        timing[f"external_{ext.name}_extract_seconds"] = ext_timing["extract_seconds"]
    name = probe_entry(cfg).weights_kind
    # How a sweep or kNN chose its head goes into metrics.json: every (lr, weight decay) head, or every k.
    selection = head.selection()
    extra = {"head_selection": selection} if selection is not None else {}
    return Fitted(probs, head.history_, head.best_epoch_, {name: head.module_.state_dict()}, timing, extra,
                  external=external)


def adapt(cfg: TrainConfig, backbone: Backbone) -> Callable[[], None] | None:
    """Partial fine-tuning, LoRA and checkpointing; returns what keeps frozen norm layers frozen in training."""
    if cfg.grad_checkpointing:
        enable_grad_checkpointing(backbone)
    if cfg.lora_rank:
        add_lora(backbone, cfg.lora_rank)
    if cfg.freeze_blocks is not None:
        freeze_blocks(backbone, cfg.freeze_blocks)
        return lambda: frozen_norm_eval(backbone)
    return None


def _finetune(cfg: TrainConfig, backbone: Backbone, table: SampleTable, rows: dict[str, np.ndarray],
              device: torch.device, reporter: Reporter, externals: list[ExternalSet]) -> Fitted:
    model = Classifier(backbone, len(table.classes), cfg.head)
    train_mode = adapt(cfg, backbone)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    settings = from_config(FinetuneSettings, cfg)
    data, timing = _data_path(cfg, table, backbone, device, reporter)
    start = time.perf_counter()
    batches = math.ceil(len(rows["train"]) / cfg.batch_size)  # the train loader keeps its last, short batch

    def on_epoch(row: dict) -> None:
        reporter.epoch(row, cfg.epochs, cfg.select)
        if row["epoch"] < cfg.epochs:
            advance.restart(f"fine-tune epoch {row['epoch'] + 1}/{cfg.epochs}")

    with reporter.task(f"fine-tune epoch 1/{cfg.epochs}", batches, "batches", cfg.batch_size) as advance:
        history, best = finetune(model, data, rows["train"], rows["val"], settings, on_epoch, train_mode, advance)
    reporter.best(history, best, cfg.select)
    seconds = time.perf_counter() - start
    seen = len(rows["train"]) * len(history) + len(rows["val"]) * len(history)
    timing |= {"train_seconds": round(seconds, 3), "images_per_second": round(seen / max(seconds, 1e-9), 2),
               "train_images_per_second": round(float(np.median([h["train_images_per_second"] for h in history])), 2),
               "n_trainable": int(trainable)}
    probs = {s: predict_rows(model, data, rows[s], cfg.batch_size)[0] for s in EVAL_SPLITS}
    external = {}
    for ext in externals:
        ext_data, _ = _data_path(cfg, ext.table, backbone, device, reporter)
        external[ext.name] = predict_rows(model, ext_data, np.arange(len(ext.table)), cfg.batch_size)[0]
    if cfg.lora_rank:
        merge_lora(backbone)  # plain timm keys again: `predict` rebuilds the model without peft
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return Fitted(probs, history, best, {"model": state}, timing, external=external)


def report_head_history(reporter: Reporter, history: list[dict], best: int, cfg: TrainConfig) -> None:
    """A probe's rows once fitted (heads train in seconds): every row to listeners, about ten lines, the best."""
    shown = shown_epochs(len(history))
    total = cfg.epochs if history and "epoch" in history[0] else None  # kNN rows are per k, not per epoch
    for index, row in enumerate(history, start=1):
        reporter.epoch(row, total, cfg.select, show=shown(index))
    reporter.best(history, best, cfg.select)


def fit(cfg: TrainConfig, table: SampleTable, rows: dict[str, np.ndarray], reporter: Reporter,
        externals: list[ExternalSet] | None = None) -> Fitted:
    """Build the backbone and train the run's mode on the split rows; val/test (and each external set's)
    probabilities and what was used."""
    check_weights(cfg.backbone, cfg.weights)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    backbone = build_backbone(cfg.backbone, cfg.weights, cfg.image_size, cfg.pooling, cfg.seed)
    cfg = cfg.model_copy(update={"image_size": backbone.preprocess.size})
    reporter.log(f"{table.source}: {len(table)} samples, {len(table.classes)} classes; "
                 + ", ".join(f"{s} {len(r)}" for s, r in rows.items()) + f"; {backbone.name} on {device}")
    for note in backbone.notes:
        reporter.log(note)
    run_mode = _frozen if cfg.mode == "frozen" else _finetune
    fitted = run_mode(cfg, backbone, table, rows, device, reporter, externals or [])
    fitted.timing.update(resource_use(backbone, device))
    fitted.device = device_name(device)
    fitted.resolved = {"image_size": backbone.preprocess.size, "family": backbone.family,
                       "model_id": backbone.model_id, "preprocess": backbone.preprocess.as_dict(),
                       "pooling_resolved": backbone.pooling, "weights_identity": backbone.weights_id}
    return fitted
