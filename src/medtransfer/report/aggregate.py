"""From runs to setups: each setup's seeds (and folds, pooled out of fold) become one estimate with one interval;
setups are compared in pairs, once each, on the test samples they share.

Every run either reaches a setup's estimate or is listed with the reason it could not (`Summary.excluded`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.config import MODE_DEFAULTS
from medtransfer.evaluation.bootstrap import BootstrapSpec
from medtransfer.evaluation.generalisation import external_spec
from medtransfer.evaluation.metrics import ARGMAX_THRESHOLD
from medtransfer.evaluation.paired_tests import holm
from medtransfer.evaluation.seeds import combined_ci, interval_label
from medtransfer.evaluation.setup_comparison import COLUMNS, PAIRED, compare_setups
from medtransfer.report.collect import SETTING, SKIPPED_COLUMNS, RunIndex
from medtransfer.report.predictions import class_names, label_arrays, read_predictions
from medtransfer.rundir import PATIENTS_FILE, RunDir

LABELS = ["task", "backbone", "weights", "mode", "head", "train_fraction", "folds", "setup", "mode_label", "mode_name",
          "model",
          "select"]
FACTORS = ("backbone", "mode_label")  # a pair answers one question when it differs in exactly one factor


@dataclass
class Replicates:
    """One setup's test predictions, one array per seed (folds pooled out of fold), on one set of samples in one order."""

    ids: tuple[str, ...]
    y: np.ndarray
    probs: list[np.ndarray]
    thresholds: list[np.ndarray | None]  # per sample: each fold fixed its own threshold on its own val
    groups: np.ndarray | None
    classes: list[str]
    seeds: list[str]  # replicate labels: the seed, or seed/fold for folds sharing a predefined test split
    fold_values: dict[str, list[float]] = field(default_factory=dict)  # per fold, mean over seeds
    replicate: str = "seed"  # or "fold model": folds that share one predefined test split
    pooled: bool = False  # each replicate is k folds' held-out parts, pooled out of fold


@dataclass
class Summary:
    """Per setup: image-level and patient-level estimates and per-class recall; the pairwise tests; what was left out;
    and each setup's image-level replicates (its labels with them), which the figures draw."""

    setups: pd.DataFrame
    patients: pd.DataFrame
    per_class: pd.DataFrame
    pairs: pd.DataFrame
    excluded: pd.DataFrame
    replicates: list[tuple[dict, Replicates]] = field(default_factory=list)


def _exclude(run: pd.Series, reason: str) -> dict:
    return {key: run.get(key) for key in SKIPPED_COLUMNS if key != "reason"} | {"reason": reason}


def _read(run_dir: str, patients: bool, split: str = "test") -> pd.DataFrame | None:
    if not patients:
        return read_predictions(run_dir, split)
    run = RunDir(Path(run_dir))
    if not run.has(PATIENTS_FILE):
        return None
    frame = run.patient_predictions(split).rename(columns={"group": "sample_id"})
    return frame.assign(group=np.nan).sort_values("sample_id").reset_index(drop=True)


def recorded_spec(run: pd.Series) -> BootstrapSpec:
    """The bootstrap a run's own CIs used (runs from before it was recorded: BootstrapSpec's defaults)."""
    recorded = {"n": run.get("bootstrap_n"), "seed": run.get("bootstrap_seed")}
    return BootstrapSpec(**{key: int(value) for key, value in recorded.items() if pd.notna(value)})


def _pool_folds(runs: pd.DataFrame, patients: bool, pooled: bool,
                split: str = "test") -> tuple[pd.DataFrame | None, np.ndarray | None, str]:
    """One replicate's predictions on `split`: its run's, or every fold's held-out part pooled; '' or why it cannot be."""
    folds = int(runs["folds"].iloc[0]) if pooled else 0
    if folds >= 2:
        missing = sorted(set(range(folds)) - set(runs["fold"]))
        if missing:
            return None, None, f"fold(s) {missing} of {folds} are not finished: this seed's out-of-fold estimate is incomplete"
    parts, thresholds = [], []
    for _, run in runs.sort_values("fold").iterrows():
        part = _read(run["run_dir"], patients, split)
        if part is None:
            return None, None, f"{PATIENTS_FILE} is missing"
        parts.append(part)
        # Patients have their own threshold, fixed on the patients of val; a run without one (recorded before
        # operating points were) is scored by the argmax rule, so no sample silently becomes a negative.
        threshold = run.get("patient_threshold" if patients else "threshold")
        thresholds.append(np.full(len(part), float(threshold) if pd.notna(threshold) else ARGMAX_THRESHOLD))
    frame = pd.concat(parts, ignore_index=True)
    if frame["sample_id"].duplicated().any():
        return None, None, "its folds' test parts overlap, so they are not out-of-fold predictions"
    order = np.argsort(frame["sample_id"].to_numpy(), kind="stable")
    threshold = np.concatenate(thresholds)[order]
    return frame.iloc[order].reset_index(drop=True), threshold, ""


def _pools_out_of_fold(setup: pd.DataFrame) -> bool:
    """Whether a setup's folds each held out their own test part (pooled out of fold), rather than val with one
    predefined test split that every fold shares (then the folds are replicates, like seeds)."""
    if int(setup["folds"].iloc[0]) < 2:
        return False
    first = setup[setup["seed"] == setup["seed"].min()].sort_values("fold")
    ids = [set(read_predictions(d)["sample_id"]) for d in first["run_dir"].iloc[:2]]
    return len(ids) < 2 or ids[0] != ids[1]


def setup_replicates(setup: pd.DataFrame, patients: bool, pooled: bool,
                     split: str = "test") -> tuple[Replicates | None, list[dict]]:
    """The setup's seeds on one shared test set (or `split`); a seed whose samples differ from the others' is listed,
    not mixed.

    Folds pooled out of fold make one replicate per seed; folds that share a predefined test split are replicates.
    """
    excluded, seeds = [], {}
    by_fold = not pooled and int(setup["folds"].iloc[0]) >= 2
    for key, runs in setup.groupby(["seed", "fold"] if by_fold else ["seed"]):
        frame, threshold, reason = _pool_folds(runs, patients, pooled, split)
        if reason:
            excluded += [_exclude(run, reason) for _, run in runs.iterrows()]
        else:  # a replicate is a seed, or a seed's fold when the folds share one predefined test split
            seeds[f"{int(key[0])}/f{int(key[1])}" if by_fold else str(int(key[0]))] = (frame, threshold, runs)
    if not seeds:
        return None, excluded
    keys = {s: (tuple(f["sample_id"]), tuple(f["label"]), tuple(class_names(f))) for s, (f, _, _) in seeds.items()}
    # The largest set of seeds sharing one test set is kept (the lowest seeds on ties).
    common = max(dict.fromkeys(keys.values()), key=lambda k: sum(v == k for v in keys.values()))
    for seed in [s for s, k in keys.items() if k != common]:
        reason = (f"its test samples differ from those of seed(s) {[s for s, k in keys.items() if k == common]} of the "
                  "same setup (splits carved with another split seed?), so the seeds cannot be combined")
        excluded += [_exclude(run, reason) for _, run in seeds.pop(seed)[2].iterrows()]
    frames = [f for f, _, _ in seeds.values()]
    y, _, classes = label_arrays(frames[0])
    groups = frames[0]["group"].to_numpy() if frames[0]["group"].notna().all() else None
    binary = len(classes) == 2
    reps = Replicates(common[0], y, [label_arrays(f)[1] for f in frames],
                      [t if binary else None for _, t, _ in seeds.values()], groups, classes, list(seeds),
                      replicate="fold model" if by_fold else "seed", pooled=pooled)
    if pooled and not patients:
        reps.fold_values = _fold_values(pd.concat([r for _, _, r in seeds.values()]))
    return reps, excluded


def _fold_values(runs: pd.DataFrame) -> dict[str, list[float]]:
    """Each fold's own test metric, averaged over seeds, shown beside the pooled estimate."""
    metrics = [c for c in runs if f"{c}_low" in runs]
    means = runs.groupby("fold")[metrics].mean(numeric_only=True)
    return {m: means[m].tolist() for m in metrics}


def _estimate(setup: pd.DataFrame, reps: Replicates, unit: str) -> tuple[dict, dict]:
    first = setup.iloc[0]
    spec = recorded_spec(first)
    thresholds = None if all(t is None for t in reps.thresholds) else reps.thresholds
    ci = combined_ci(reps.y, reps.probs, spec, reps.groups, thresholds=thresholds, ordinal=bool(first["ordinal"]))
    folds = int(first["folds"]) if reps.pooled else 0  # folds that shared a test split count as replicates
    row = {"n_seeds": len(reps.seeds), "seeds": ",".join(map(str, reps.seeds)), "n_folds": folds,
           "n_test": len(reps.y), "ci": interval_label(len(reps.seeds), unit, folds, spec.n, replicate=reps.replicate)}
    for name, entry in ci.items():
        row.update({name: entry["value"], f"{name}_low": entry["low"], f"{name}_high": entry["high"]})
        if name in reps.fold_values:
            row[f"{name}_folds"] = ", ".join(f"{v:.3f}" for v in reps.fold_values[name])
    return row, ci


def _unit(reps: Replicates) -> str:
    """What the bootstrap resampled, in the run metrics' words: whole groups (patients) or samples (images)."""
    return "sample" if reps.groups is None else "group"


def _per_class(labels: dict, reps: Replicates, ci: dict) -> list[dict]:
    counts = np.bincount(reps.y, minlength=len(reps.classes))
    return [labels | {"class": name, "n_test": int(counts[k]), "recall": ci[f"recall_c{k}"]["value"],
                      "recall_low": ci[f"recall_c{k}"]["low"], "recall_high": ci[f"recall_c{k}"]["high"]}
            for k, name in enumerate(reps.classes) if f"recall_c{k}" in ci]


def _val_choice(setup: pd.DataFrame) -> dict:
    """The mean over seeds and folds of every validation metric: what a 'best setup' may be chosen on."""
    return {c: float(setup[c].mean()) for c in setup if c.startswith("val_") and setup[c].dtype.kind == "f"}


def summarise(index: RunIndex) -> Summary:
    """Every setup's estimates (images, patients, per class), the pairwise tests, and the runs left out and why."""
    rows, patient_rows, class_rows, excluded, groups = [], [], [], [], []
    keys = index.setup_keys or ["task"]
    for _, setup in index.runs.groupby(keys, dropna=False, sort=False):
        labels = {k: setup.iloc[0][k] for k in LABELS + index.factors if k in setup}
        pooled = _pools_out_of_fold(setup)
        reps, left_out = setup_replicates(setup, patients=False, pooled=pooled)
        excluded += left_out
        if reps is None:
            continue
        row, ci = _estimate(setup, reps, _unit(reps))
        rows.append(labels | row | _val_choice(setup))
        class_rows += _per_class(labels, reps, ci)
        groups.append((labels, reps))
        if reps.groups is not None:
            patient_reps, left_out = setup_replicates(setup, patients=True, pooled=pooled)
            excluded += [entry | {"reason": f"patient level: {entry['reason']}"} for entry in left_out]
            if patient_reps is not None:
                patient_rows.append(labels | _estimate(setup, patient_reps, "group")[0])  # one row per patient
    frame = pd.DataFrame(rows)
    return Summary(frame, pd.DataFrame(patient_rows), pd.DataFrame(class_rows), setup_pairs(groups, index),
                   pd.DataFrame(excluded, columns=SKIPPED_COLUMNS), groups)


def one_factor_pairs(setups: pd.DataFrame, factors: tuple[str, ...] = FACTORS) -> list[tuple[str, str]]:
    """(a, b) setups that differ in exactly one factor: backbones within a mode, modes within a backbone, or one
    other setting within a backbone and mode. Other settings count only within a mode, since some defaults (lr,
    epochs, batch size) depend on the mode."""
    columns = ["setup", *dict.fromkeys([*factors, *(["mode"] if "mode" in setups else [])])]
    rows = setups[columns].drop_duplicates().to_dict("records")

    def differences(a: dict, b: dict) -> int:
        others = [f for f in factors if f not in FACTORS]
        if a.get("mode") != b.get("mode"):  # a mode brings its own lr, epochs, batch size and augmentation
            others = [f for f in others if f.removeprefix(SETTING) not in MODE_DEFAULTS["frozen"]]
        return sum(str(a[f]) != str(b[f]) for f in [*FACTORS, *others] if f in a)

    return [(a["setup"], b["setup"]) for i, a in enumerate(rows) for b in rows[i + 1:] if differences(a, b) == 1]


def setup_pairs(groups: list[tuple[dict, Replicates]], index: RunIndex, external: str | None = None) -> pd.DataFrame:
    """Each pair of setups once (seeds aggregated) per task and train fraction, on shared test samples; Holm per task.

    `external`: the replicates are of that external set, resampled on its own stream (as its metrics.json CIs are)."""
    lead = ["task", "train_fraction", "n_test"]
    blocks: dict[tuple, list[tuple[dict, Replicates]]] = {}
    for labels, reps in groups:
        key = (labels["task"], labels["train_fraction"], reps.ids, tuple(reps.y), tuple(reps.classes))
        blocks.setdefault(key, []).append((labels, reps))
    parts = []
    for (task, fraction, *_), members in blocks.items():
        setups = pd.DataFrame([labels for labels, _ in members])
        pairs = one_factor_pairs(setups, tuple(index.factors) or FACTORS)
        if not pairs:
            continue
        reps = members[0][1]
        runs = index.runs
        spec = recorded_spec(runs[(runs["task"] == task) & (runs["setup"] == members[0][0]["setup"])].iloc[0])
        spec = spec if external is None else external_spec(spec, external)
        probs = {labels["setup"]: r.probs for labels, r in members}
        frame = compare_setups(reps.y, probs, spec, reps.groups, pairs)
        parts.append(frame.assign(task=task, train_fraction=fraction, n_test=len(reps.y)))
    if not parts:
        return pd.DataFrame(columns=lead + list(COLUMNS))
    out = pd.concat(parts, ignore_index=True)[lead + list(COLUMNS)]
    for test in PAIRED:  # the family is every distinct pair of a task
        out[f"{test}_p_holm"] = out.groupby("task")[f"{test}_p"].transform(lambda p: holm(p.to_numpy(dtype=float)))
    return out
