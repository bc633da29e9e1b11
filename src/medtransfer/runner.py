"""One run end to end: source → SampleTable → split → (cached features → head | fine-tune) → metrics → run dir."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from medtransfer.config import TrainConfig, task_name
from medtransfer.data.splits import assign_splits, missing_classes
from medtransfer.data.table import SampleTable
from medtransfer.datasets import load_table, split_plan
from medtransfer.engine.cache import cache_root
from medtransfer.engine.device import pick_device, seed_everything
from medtransfer.engine.features import cached_features, extract_table, feature_cache, feature_key
from medtransfer.engine.finetune import Classifier, FinetuneSettings, finetune, predict_rows
from medtransfer.engine.heads import HeadTraining, ProbeHead
from medtransfer.engine.image_cache import cached_images
from medtransfer.engine.knn import KNNProbe
from medtransfer.engine.pipeline import DataPath, default_workers
from medtransfer.engine.sweep import HeadSweep
from medtransfer.evaluation.bootstrap import BootstrapSpec, bootstrap_ci
from medtransfer.evaluation.metrics import confusion, youden_threshold
from medtransfer.evaluation.patients import PatientPredictions, pool_by_patient
from medtransfer.models.adapt import add_lora, enable_grad_checkpointing, freeze_blocks, frozen_norm_eval, merge_lora
from medtransfer.models.backbone import Backbone, build_backbone
from medtransfer.models.weights import check_weights_arg, weights_identity
from medtransfer.progress import Reporter
from medtransfer.rundir import RunWriter, fresh_run_dir

EVAL_SPLITS = ("val", "test")
EXTRACT_BATCH_CUDA = 1024  # first try; halved on out-of-memory


@dataclass
class Fitted:
    """What a mode hands to evaluation: val/test probabilities, the training record and the weights to save."""

    probs: dict[str, np.ndarray]
    history: list[dict]
    best_epoch: int
    tensors: dict[str, dict[str, torch.Tensor]]
    timing: dict
    extra: dict = field(default_factory=dict)  # mode-specific results for metrics.json (e.g. the head sweep)


@dataclass
class Outcome:
    """What a finished run produced, beside its files."""

    run_dir: Path
    metrics: dict


def default_out(cfg: TrainConfig) -> Path:
    """runs/<task>-<backbone>-<mode>-s<seed>, made unique."""
    stem = task_name(cfg.task, cfg.data)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}-{cfg.backbone}-{cfg.mode}-s{cfg.seed}")
    return fresh_run_dir(Path("runs"), name)


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


def _split_rows(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {s: np.flatnonzero(frame["split"].to_numpy() == s) for s in ("train", *EVAL_SPLITS)}


def _data_path(cfg: TrainConfig, table: SampleTable, backbone: Backbone, device: torch.device,
               reporter: Reporter) -> tuple[DataPath, dict]:
    """Batches from the decoded-image cache (built on first use) or, with --no-image-cache, from the files."""
    pre = backbone.preprocess
    if not cfg.image_cache:
        return DataPath(table, pre, device, cfg.workers), {}
    with reporter.task(f"decode images ({pre.size}px)", len(table)) as advance:
        path, timing = cached_images(cache_root(cfg.cache_dir), table, pre, cfg.workers, advance)
    return DataPath(table, pre, device, cfg.workers, path), timing


def _make_head(cfg: TrainConfig) -> ProbeHead | HeadSweep | KNNProbe:
    if cfg.head == "knn":
        return KNNProbe(select=cfg.select)
    training = HeadTraining(kind=cfg.head, epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
                            schedule=cfg.schedule, select=cfg.select, patience=cfg.patience,
                            balance=cfg.class_weights, seed=cfg.seed)
    if cfg.head_sweep:
        return HeadSweep(**asdict(training))
    return ProbeHead(**asdict(training), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _frozen(cfg: TrainConfig, backbone: Backbone, table: SampleTable, rows: dict[str, np.ndarray],
            device: torch.device, reporter: Reporter) -> Fitted:
    key = feature_key(backbone, weights_identity(cfg.weights, backbone.timm_name, cfg.seed), table)
    image_timing: dict = {}

    def fill(out: np.ndarray) -> None:
        images = cache_root(cfg.cache_dir) if cfg.image_cache else None
        # Inference keeps no activations for backward: on a GPU far larger batches fit than for training.
        batch = EXTRACT_BATCH_CUDA if device.type == "cuda" else max(cfg.batch_size, 64)
        image_timing.update(extract_table(backbone, table, out, device, cfg.workers, batch, images,
                                          lambda b: reporter.task(f"extract {backbone.timm_name} (batch {b})",
                                                                  len(table))))

    features, timing = cached_features(feature_cache(cache_root(cfg.cache_dir)), key,
                                       (len(table), backbone.num_features), fill)
    timing.update(image_timing)
    if not timing["cache_hit"]:
        timing["images_per_second"] = round(len(table) / max(timing["extract_seconds"], 1e-9), 2)
    reporter.log(f"features: {'cache hit' if timing['cache_hit'] else 'extracted'} ({timing['cache_entry']})")
    y = table.frame["target"].to_numpy()
    head = _make_head(cfg)
    start = time.perf_counter()
    train_x = np.asarray(features[rows["train"]], dtype=np.float32)  # heads train on features held in memory
    head.fit(train_x, y[rows["train"]], features[rows["val"]], y[rows["val"]], len(table.classes))
    timing["train_seconds"] = round(time.perf_counter() - start, 3)
    probs = {s: head.predict_proba(features[rows[s]]) for s in EVAL_SPLITS}
    name = "knn.safetensors" if cfg.head == "knn" else "head.safetensors"
    # How a sweep or kNN chose its head goes into metrics.json: every (lr, weight decay) head, or every k.
    extra = {"head_selection": {**head.choice_, "candidates": getattr(head, "table_", head.history_)}} \
        if hasattr(head, "choice_") else {}
    return Fitted(probs, head.history_, head.best_epoch_, {name: head.module_.state_dict()}, timing, extra)


def _adapt(cfg: TrainConfig, backbone: Backbone) -> Callable[[], None] | None:
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
              device: torch.device, reporter: Reporter) -> Fitted:
    model = Classifier(backbone, len(table.classes), cfg.head)
    train_mode = _adapt(cfg, backbone)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    settings = FinetuneSettings(cfg.epochs, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.optimizer, cfg.schedule,
                                cfg.select, cfg.patience, cfg.class_weights, cfg.augment, cfg.seed, cfg.accumulate,
                                cfg.compile)
    data, timing = _data_path(cfg, table, backbone, device, reporter)
    start = time.perf_counter()

    def on_epoch(row: dict) -> None:
        advance(1)
        reporter.log(f"epoch {row['epoch']}/{cfg.epochs}: train loss {row['train_loss']:.4f}, val loss "
                     f"{row['val_loss']:.4f}, {cfg.select} {row['val_metric']:.4f} ({row['seconds']:.0f} s)")

    with reporter.task("fine-tune epochs", cfg.epochs) as advance:
        history, best = finetune(model, data, rows["train"], rows["val"], settings, on_epoch, train_mode)
    seconds = time.perf_counter() - start
    seen = len(rows["train"]) * len(history) + len(rows["val"]) * len(history)
    timing |= {"train_seconds": round(seconds, 3), "images_per_second": round(seen / max(seconds, 1e-9), 2),
               "train_images_per_second": round(float(np.median([h["train_images_per_second"] for h in history])), 2),
               "n_trainable": int(trainable)}
    probs = {s: predict_rows(model, data, rows[s], cfg.batch_size)[0] for s in EVAL_SPLITS}
    if cfg.lora_rank:
        merge_lora(backbone)  # plain timm keys again: `predict` rebuilds the model without peft
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return Fitted(probs, history, best, {"model.safetensors": state}, timing)


def _per_class(ci: dict[str, dict], classes: list[str]) -> dict[str, dict]:
    """Moves the per-class recalls (`recall_c<k>`) out of the flat metrics into {class: {recall: CI}}."""
    return {name: {"recall": ci.pop(f"recall_c{k}")} for k, name in enumerate(classes) if f"recall_c{k}" in ci}


def _score_splits(y: dict[str, np.ndarray], probs: dict[str, np.ndarray], groups: dict[str, np.ndarray | None],
                  spec: BootstrapSpec, classes: list[str], ordinal: bool, reporter: Reporter) -> dict:
    """Val and test metrics with CIs; a binary task's operating point is fixed on val (Youden's J), then applied."""
    # Both classes are in val (splits guarantee it for images; pooling could in principle leave patients of one).
    threshold = youden_threshold(y["val"], probs["val"]) if len(classes) == 2 and len(set(y["val"])) == 2 else None
    out: dict = {"per_class": {}}
    for split in EVAL_SPLITS:
        with reporter.task(f"bootstrap {split}", spec.n) as advance:
            out[split] = bootstrap_ci(y[split], probs[split], spec, groups[split], advance, threshold=threshold,
                                      ordinal=ordinal)
        out["per_class"][split] = _per_class(out[split], classes)
        counts = np.bincount(y[split], minlength=len(classes))
        for k, name in enumerate(classes):
            out["per_class"][split].setdefault(name, {})["n"] = int(counts[k])
    if threshold is not None:
        out["threshold"] = {"value": threshold, "rule": "Youden's J on val", "positive_class": classes[1]}
    return out


def _evaluate(cfg: TrainConfig, table: SampleTable, frame: pd.DataFrame, rows: dict[str, np.ndarray],
              probs: dict[str, np.ndarray], reporter: Reporter) -> dict:
    spec = BootstrapSpec(n=cfg.bootstrap, seed=cfg.seed)
    target = frame["target"].to_numpy()
    grouped = table.has_groups
    y = {s: target[rows[s]] for s in EVAL_SPLITS}
    groups = {s: frame["group"].to_numpy()[rows[s]] if grouped else None for s in EVAL_SPLITS}
    out = _score_splits(y, probs, groups, spec, table.classes, table.ordinal, reporter)
    out["confusion"] = {s: confusion(y[s], probs[s]) for s in EVAL_SPLITS}
    out["counts"] = {s: {name: int(n) for name, n in zip(table.classes, np.bincount(target[r], minlength=len(
        table.classes)))} for s, r in rows.items()}
    out["bootstrap"] = {"n": spec.n, "level": spec.level, "unit": "group" if grouped else "sample", "seed": spec.seed}
    out["ordinal"] = table.ordinal
    if grouped:
        out["patient"] = _patient_metrics(cfg, table, frame, rows, probs, spec, reporter)
    return out


def patient_predictions(frame: pd.DataFrame, rows: dict[str, np.ndarray], probs: dict[str, np.ndarray],
                        how: str) -> dict[str, PatientPredictions]:
    """Image probabilities pooled per patient (group), for val and test."""
    y, groups = frame["target"].to_numpy(), frame["group"].to_numpy()
    return {s: pool_by_patient(groups[rows[s]], y[rows[s]], probs[s], how) for s in EVAL_SPLITS}


def _patient_metrics(cfg: TrainConfig, table: SampleTable, frame: pd.DataFrame, rows: dict[str, np.ndarray],
                     probs: dict[str, np.ndarray], spec: BootstrapSpec, reporter: Reporter) -> dict:
    """The same metrics with CIs over patients, one pooled prediction per patient (its own val threshold)."""
    pooled = patient_predictions(frame, rows, probs, cfg.patient_agg)
    out = _score_splits({s: p.y for s, p in pooled.items()}, {s: p.prob for s, p in pooled.items()},
                        dict.fromkeys(EVAL_SPLITS), spec, table.classes, table.ordinal, reporter)
    out.update({f"n_{s}": int(len(p.ids)) for s, p in pooled.items()})
    out["aggregation"] = cfg.patient_agg
    return out


def _predictions(table: SampleTable, frame: pd.DataFrame, rows: dict[str, np.ndarray],
                 probs: dict[str, np.ndarray]) -> pd.DataFrame:
    parts = []
    for split in EVAL_SPLITS:
        part = frame.iloc[rows[split]]
        block = pd.DataFrame({"sample_id": part["sample_id"].values, "group": part["group"].values,
                              "split": split, "label": part["label"].values,
                              "predicted": [table.classes[k] for k in probs[split].argmax(1)]})
        for k, name in enumerate(table.classes):
            block[f"prob_{name}"] = probs[split][:, k]
        parts.append(block)
    return pd.concat(parts, ignore_index=True)


def _patient_table(table: SampleTable, pooled: dict[str, PatientPredictions]) -> pd.DataFrame:
    parts = []
    for split, p in pooled.items():
        block = pd.DataFrame({"group": p.ids, "split": split, "label": [table.classes[k] for k in p.y],
                              "predicted": [table.classes[k] for k in p.prob.argmax(1)], "n_images": p.n_images})
        for k, name in enumerate(table.classes):
            block[f"prob_{name}"] = p.prob[:, k]
        parts.append(block)
    return pd.concat(parts, ignore_index=True)


def train(cfg: TrainConfig, reporter: Reporter | None = None) -> Outcome:
    """Run one configuration and write its run directory; bad input raises UserError before anything is kept."""
    reporter = reporter or Reporter(quiet=True)
    started = time.perf_counter()
    check_weights_arg(cfg.weights)
    cfg = cfg.model_copy(update={"workers": default_workers() if cfg.workers is None else cfg.workers})
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    with RunWriter(out) as writer:  # validates --out before the long work
        table = load_table(cfg)
        for note in table.notes:
            reporter.log(f"note: {note}")
        frame = assign_splits(table, split_plan(cfg))
        absent = missing_classes(frame, table.classes)
        for split, names in absent.items():
            reporter.log(f"warning: class(es) {names} have no {split} samples (recorded as missing_classes)")
        rows = _split_rows(frame)
        seed_everything(cfg.seed)
        device = pick_device(cfg.device)
        backbone = build_backbone(cfg.backbone, cfg.weights, cfg.image_size, cfg.pooling, cfg.seed)
        cfg = cfg.model_copy(update={"image_size": backbone.preprocess.size})
        reporter.log(f"{table.source}: {len(table)} samples, {len(table.classes)} classes; "
                     + ", ".join(f"{s} {len(r)}" for s, r in rows.items()) + f"; {backbone.timm_name} on {device}")
        run_mode = _frozen if cfg.mode == "frozen" else _finetune
        fitted = run_mode(cfg, backbone, table, rows, device, reporter)
        timing = fitted.timing
        eval_start = time.perf_counter()
        metrics = _evaluate(cfg, table, frame, rows, fitted.probs, reporter)
        timing["eval_seconds"] = round(time.perf_counter() - eval_start, 3)
        timing["total_seconds"] = round(time.perf_counter() - started, 3)
        timing.update(resource_use(backbone, device))
        metrics.update({"n_train": int(len(rows["train"])), "n_val": int(len(rows["val"])),
                        "n_test": int(len(rows["test"])), "classes": table.classes, "best_epoch": fitted.best_epoch,
                        "notes": table.notes, "timing": timing, **fitted.extra})
        if absent:
            metrics["missing_classes"] = absent
        resolved = cfg.model_dump() | {"task": task_name(cfg.task, cfg.data), "out": str(out), "timm_name": backbone.timm_name,
                                       "preprocess": backbone.preprocess.as_dict(), "pooling_resolved": backbone.pooling,
                                       "weights_identity": weights_identity(cfg.weights, backbone.timm_name, cfg.seed)}
        writer.yaml("config.yaml", resolved)
        writer.json("metrics.json", metrics)
        writer.csv("predictions.csv", _predictions(table, frame, rows, fitted.probs))
        if table.has_groups:
            writer.csv("patient_predictions.csv",
                       _patient_table(table, patient_predictions(frame, rows, fitted.probs, cfg.patient_agg)))
        writer.csv("history.csv", pd.DataFrame(fitted.history))
        for name, state in fitted.tensors.items():
            save_file(state, str(writer.path(name)))
        run_dir = writer.commit()
    return Outcome(run_dir, metrics)
