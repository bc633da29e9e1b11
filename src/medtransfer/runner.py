"""One run in the order of the design's data flow: load → split → fit (frozen | finetune) → evaluate → write."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medtransfer.config import TrainConfig, task_name
from medtransfer.data.dedup import Deduplicated, apply_dedup
from medtransfer.data.duplicate_hashes import hash_workers
from medtransfer.data.duplicate_record import log_line
from medtransfer.data.duplicate_scan import scan_table
from medtransfer.data.external import ExternalSet, load_external
from medtransfer.data.load import load_table, resolve_positive_class, split_plan
from medtransfer.data.splits import assign_splits, missing_classes
from medtransfer.data.table import SampleTable
from medtransfer.engine.cache import cache_root
from medtransfer.engine.workers import default_workers
from medtransfer.evaluation.prediction_tables import EVAL_SPLITS, patient_predictions, patient_table, prediction_table
from medtransfer.evaluation.bootstrap import BootstrapSpec
from medtransfer.evaluation.generalisation import ScoredSet
from medtransfer.evaluation.patients import pool_by_patient
from medtransfer.evaluation.scoring import check_finite, evaluate
from medtransfer.evaluation.shift_scoring import check_subgroups, score_external, score_subgroups
from medtransfer.progress import Reporter
from medtransfer.provenance import environment_record
from medtransfer.result_tables import metrics_table  # the terminal's table: the log reads as the screen did
from medtransfer.rundir import LOG_FILE, RunDir, RunMetrics, RunWriter, fresh_run_dir
from medtransfer.tracking import Tracker, check_tracker, tracking

if TYPE_CHECKING:  # fitting imports torch, which a run loads only once its data passed every check
    from medtransfer.fitting import Fitted


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced: its run directory (read back typed) and its metrics record."""

    run_dir: RunDir
    metrics: RunMetrics


@dataclass
class SplitData:
    """A run's data once loaded, checked, deduplicated and split: the table, its split column, and the split rows."""

    table: SampleTable
    frame: pd.DataFrame  # the table's frame with its `split` column
    rows: dict[str, np.ndarray]  # split → row indices into the table
    duplicates: dict  # duplicate pairs as the final splits hold them (metrics.json `duplicates`)
    missing: dict[str, list[str]]  # split → classes absent there (allowed by --allow-missing-classes)
    hash_seconds: float
    external: list[ExternalSet] = field(default_factory=list)  # external test sets, matched to the classes


def train(cfg: TrainConfig, reporter: Reporter | None = None, command: list[str] | None = None) -> TrainResult:
    """Run one configuration and write its run directory; bad input raises UserError before anything is kept.

    `command`: the command line that asked for the run, for environment.json (default: this process's)."""
    reporter = reporter or Reporter(quiet=True)
    check_tracker(cfg.tracker)  # a missing extra fails before any work
    cfg = cfg.model_copy(update={"workers": default_workers() if cfg.workers is None else cfg.workers})
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    cfg = cfg.model_copy(update={"out": str(out)})
    with RunWriter(out) as writer:  # validates and locks --out before the long work
        # The log and the tracker close before the commit: their files land with the run, atomically.
        with reporter.record(writer.path(LOG_FILE)), tracked(cfg, writer.staging, out, reporter) as tracker:
            record = train_into(writer, cfg, reporter, tracker, command)
        run_dir = writer.commit()
    return TrainResult(RunDir(run_dir), record)


def train_into(writer: RunWriter, cfg: TrainConfig, reporter: Reporter, tracker: Tracker | None,
               command: list[str] | None = None) -> RunMetrics:
    """The data flow of one run into the writer's staging folder: load → split → fit → evaluate → write."""
    started, started_at = time.perf_counter(), datetime.now(UTC)
    data = load_and_split(cfg, reporter)
    # Torch and the models load only now, once the data passed every check: bad input fails in a second.
    from medtransfer.fitting import fit

    fitted = fit(cfg, data.table, data.rows, reporter, data.external)
    check_finite(fitted.probs | {ext.split: fitted.external[ext.name] for ext in data.external})
    cfg = cfg.model_copy(update={"image_size": fitted.resolved["image_size"]})
    eval_start = time.perf_counter()
    sections = evaluate(cfg, data.table, data.frame, data.rows, fitted.probs, reporter)
    sections |= beyond_the_split(cfg, data, fitted, sections, reporter)
    fitted.timing |= {"eval_seconds": round(time.perf_counter() - eval_start, 3),
                      "total_seconds": round(time.perf_counter() - started, 3), "hash_seconds": data.hash_seconds}
    record = RunMetrics.build(sections | run_summary(data, fitted))
    log_metrics(reporter, record)
    config = config_record(cfg, data, fitted)
    if tracker is not None:  # the settings as config.yaml has them, resolved (positive class, preprocessing, …)
        tracker.log_params(config)
        tracker.log_final(final_metrics(record))
    write_run(writer, config, data, fitted, record, environment_record(cfg, fitted.device, started_at, command))
    return record


@contextmanager
def tracked(cfg: TrainConfig, folder: Path, out: Path, reporter: Reporter) -> Iterator[Tracker | None]:
    """The run's --tracker (None for none), logging every history row as it is made."""
    with tracking(cfg.tracker, folder, out.name, experiment=task_name(cfg.task, cfg.data),
                  final=out.absolute()) as tracker:
        if tracker is None:
            yield None
            return
        with reporter.listen(tracker.log_epoch):
            yield tracker


def final_metrics(record: RunMetrics) -> dict[str, float]:
    """A run's val and test metrics (point values on the whole split) as `val_auroc`, `test_auroc`, …"""
    return {f"{split}_{name}": interval.value for split, metrics in (("val", record.val), ("test", record.test))
            for name, interval in metrics.items()}


def default_out(cfg: TrainConfig) -> Path:
    """runs/<task>-<backbone>-<mode>-s<seed>, made unique."""
    stem = task_name(cfg.task, cfg.data)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}-{cfg.backbone}-{cfg.mode}-s{cfg.seed}")
    return fresh_run_dir(Path("runs"), name)


def load_and_split(cfg: TrainConfig, reporter: Reporter) -> SplitData:
    """The configured source as a SampleTable, its duplicates found (and acted on, per --dedup), then split."""
    table = load_table(cfg)
    for note in table.notes:
        reporter.log(f"note: {note}")
    # Both fail now, before the duplicate scan and the training: a column that cannot be binned, a bad external set.
    check_subgroups(cfg, table)
    external = load_external(cfg, table)
    for ext in external:
        reporter.log(f"external set {ext.name}: {ext.table.source}, {len(ext.table)} samples, evaluated whole")
        for note in ext.table.notes:
            reporter.log(f"note: external set {ext.name}: {note}")
        if ext.missing:
            reporter.log(f"warning: external set {ext.name} has no samples of class(es) {ext.missing} (recorded "
                         "as classes_missing; the metrics that need every class are not reported there)")
    dedup = deduplicate(cfg, table, reporter)  # before splitting: --dedup group and drop shape the splits
    table = dedup.table
    frame = assign_splits(table, split_plan(cfg))
    duplicates = dedup.record(frame)
    reporter.log(log_line(duplicates))
    missing = missing_classes(frame, table.classes)
    for split, names in missing.items():
        reporter.log(f"warning: class(es) {names} have no {split} samples (recorded as missing_classes)")
    rows = {s: np.flatnonzero(frame["split"].to_numpy() == s) for s in ("train", *EVAL_SPLITS)}
    return SplitData(table, frame, rows, duplicates, missing, dedup.scan.seconds, external)


def beyond_the_split(cfg: TrainConfig, data: SplitData, fitted: Fitted, sections: dict, reporter: Reporter) -> dict:
    """The metrics record's `external` and `subgroups` sections, at the operating points fixed on val."""
    spec = BootstrapSpec(n=cfg.bootstrap, seed=cfg.seed)
    threshold = sections["threshold"]["value"] if "threshold" in sections else None
    patient = sections.get("patient")
    # an external set with patients beside an internal split without: the val operating point is the image one
    patient_threshold = threshold if patient is None else patient.get("threshold", {}).get("value")
    test = data.frame.iloc[data.rows["test"]]
    internal = ScoredSet("test", test["target"].to_numpy(), [fitted.probs["test"]],
                         test["group"].to_numpy() if data.table.has_groups else None, [threshold])
    out = {}
    if data.external:
        out["external"] = {ext.name: score_external(ext, fitted.external[ext.name], internal, spec, threshold,
                                                    patient_threshold, cfg.patient_agg, reporter)
                           for ext in data.external}
    if cfg.subgroups:
        out["subgroups"] = score_subgroups(cfg, data.table, data.frame, data.rows["test"], fitted.probs["test"],
                                           threshold, spec)
    return out


def deduplicate(cfg: TrainConfig, table: SampleTable, reporter: Reporter) -> Deduplicated:
    """Exact and near-duplicate images (hashes cached with the decoded images), and the --dedup action on them."""
    with reporter.task("hash images (duplicates)", len(table), "images") as advance:
        scan = scan_table(table, cache_root(cfg.cache_dir), hash_workers(cfg.workers), progress=advance)
    return apply_dedup(table, scan, cfg.dedup)


def run_summary(data: SplitData, fitted: Fitted) -> dict:
    """The metrics record's sections beside the evaluation: sizes, classes, the training's outcome and cost."""
    notes = data.table.notes + [f"external set {e.name}: {note}" for e in data.external for note in e.table.notes]
    summary = {"n_train": int(len(data.rows["train"])), "n_val": int(len(data.rows["val"])),
               "n_test": int(len(data.rows["test"])), "classes": data.table.classes,
               "best_epoch": fitted.best_epoch, "notes": notes, "timing": fitted.timing,
               "duplicates": data.duplicates, **fitted.extra}
    if data.missing:
        summary["missing_classes"] = data.missing
    return summary


def log_metrics(reporter: Reporter, record: RunMetrics) -> None:
    """The run's metrics table into its train.log (the `train` command prints the same table on stdout)."""
    reporter.result(metrics_table(record), terminal=False)


def config_record(cfg: TrainConfig, data: SplitData, fitted: Fitted) -> dict:
    """The run's settings as config.yaml records them: the config, its task, and what the run resolved."""
    resolved = {k: v for k, v in fitted.resolved.items() if k != "image_size"}
    # The positive class as it ended up (the second class of a binary task, given or not), so the record says it.
    named = {"task": task_name(cfg.task, cfg.data), "positive_class": resolve_positive_class(cfg, data.table)}
    return cfg.model_dump() | named | resolved


def write_run(writer: RunWriter, config: dict, data: SplitData, fitted: Fitted, record: RunMetrics,
              environment: dict) -> None:
    """Every file of the run into the writer's staging folder (committed, DONE last, by the caller)."""
    writer.write_config(config)
    writer.write_environment(environment)
    writer.write_metrics(record)
    threshold = record.threshold.value if record.threshold else None
    external = [(ext.split, ext.table, fitted.external[ext.name]) for ext in data.external]
    writer.write_predictions(prediction_table(data.table, data.frame, data.rows, fitted.probs, threshold, external))
    if data.table.has_groups or any(ext.table.has_groups for ext in data.external):
        pooled = patient_predictions(data.frame, data.rows, fitted.probs, config["patient_agg"]) \
            if data.table.has_groups else {}
        pooled |= {split: pool_by_patient(table.frame["group"].to_numpy(), table.frame["target"].to_numpy(), probs,
                                          config["patient_agg"]) for split, table, probs in external
                   if table.has_groups}
        writer.write_patient_predictions(patient_table(data.table, pooled))
    writer.write_history(pd.DataFrame(fitted.history))
    fitted.save_weights(writer)
