"""One run end to end: source → SampleTable → split → (cached features → head | fine-tune) → metrics → run dir."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.config import TrainConfig, task_name
from medtransfer.data.duplicates import Deduplicated, apply_dedup, hash_workers, log_line, scan_table
from medtransfer.data.splits import assign_splits, missing_classes
from medtransfer.data.table import SampleTable
from medtransfer.data.load import load_table, split_plan
from medtransfer.engine.cache import cache_root
from medtransfer.engine.workers import default_workers
from medtransfer.errors import UserError
from medtransfer.evaluation.bootstrap import BootstrapSpec, bootstrap_ci
from medtransfer.evaluation.metrics import confusion, youden_threshold
from medtransfer.evaluation.patients import PatientPredictions, pool_by_patient
from medtransfer.progress import Reporter
from medtransfer.rundir import RunWriter, fresh_run_dir

EVAL_SPLITS = ("val", "test")


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


def _split_rows(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {s: np.flatnonzero(frame["split"].to_numpy() == s) for s in ("train", *EVAL_SPLITS)}


def _deduplicate(cfg: TrainConfig, table: SampleTable, reporter: Reporter) -> Deduplicated:
    """Exact and near-duplicate images (hashes cached with the decoded images), and the --dedup action on them."""
    with reporter.task("hash images (duplicates)", len(table)) as advance:
        scan = scan_table(table, cache_root(cfg.cache_dir), hash_workers(cfg.workers), progress=advance)
    return apply_dedup(table, scan, cfg.dedup)


def check_finite(probs: dict[str, np.ndarray]) -> None:
    """Refuse NaN/inf probabilities before any metric: they would crash scikit-learn or fool the metrics."""
    bad = {split: int((~np.isfinite(p)).any(axis=1).sum()) for split, p in probs.items()}
    if any(bad.values()):
        counts = ", ".join(f"{n} of {len(probs[s])} {s}" for s, n in bad.items() if n)
        raise UserError("predictions", f"{counts} predictions are NaN or inf: the model's features or weights hold "
                        "NaN or inf (a checkpoint with NaN values, NaN pixels, or training that diverged)",
                        "check --weights and the data, or lower --lr")


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
    cfg = cfg.model_copy(update={"workers": default_workers() if cfg.workers is None else cfg.workers})
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    with RunWriter(out) as writer:  # validates and locks --out before the long work
        table = load_table(cfg)
        for note in table.notes:
            reporter.log(f"note: {note}")
        dedup = _deduplicate(cfg, table, reporter)  # before splitting: --dedup group and drop shape the splits
        table = dedup.table
        frame = assign_splits(table, split_plan(cfg))
        duplicates = dedup.record(frame)  # the pairs as the final splits hold them
        reporter.log(log_line(duplicates))
        absent = missing_classes(frame, table.classes)
        for split, names in absent.items():
            reporter.log(f"warning: class(es) {names} have no {split} samples (recorded as missing_classes)")
        rows = _split_rows(frame)
        # Torch and the models load only now, once the data passed every check: bad input fails in about a second.
        from medtransfer.fitting import fit

        fitted = fit(cfg, table, rows, reporter)
        check_finite(fitted.probs)
        cfg = cfg.model_copy(update={"image_size": fitted.resolved["image_size"]})
        timing = fitted.timing
        eval_start = time.perf_counter()
        metrics = _evaluate(cfg, table, frame, rows, fitted.probs, reporter)
        timing["eval_seconds"] = round(time.perf_counter() - eval_start, 3)
        timing["total_seconds"] = round(time.perf_counter() - started, 3)
        timing["hash_seconds"] = dedup.scan.seconds
        metrics.update({"n_train": int(len(rows["train"])), "n_val": int(len(rows["val"])),
                        "n_test": int(len(rows["test"])), "classes": table.classes, "best_epoch": fitted.best_epoch,
                        "notes": table.notes, "timing": timing, "duplicates": duplicates,
                        **fitted.extra})
        if absent:
            metrics["missing_classes"] = absent
        resolved = cfg.model_dump() | {"task": task_name(cfg.task, cfg.data), "out": str(out)} | {
            k: v for k, v in fitted.resolved.items() if k != "image_size"}
        writer.yaml("config.yaml", resolved)
        writer.json("metrics.json", metrics)
        writer.csv("predictions.csv", _predictions(table, frame, rows, fitted.probs))
        if table.has_groups:
            writer.csv("patient_predictions.csv",
                       _patient_table(table, patient_predictions(frame, rows, fitted.probs, cfg.patient_agg)))
        writer.csv("history.csv", pd.DataFrame(fitted.history))
        fitted.save_weights(writer)
        run_dir = writer.commit()
    return Outcome(run_dir, metrics)
