"""Across seeds: one row per configuration with a CI; across configurations: paired tests on the same test samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from medtransfer.evaluation.bootstrap import BootstrapSpec
from medtransfer.evaluation.paired import COLUMNS, compare_models, holm
from medtransfer.report.collect import RunIndex
from medtransfer.report.predictions import class_names, label_arrays, read_predictions

CONFIG = ["task", "backbone", "weights", "mode", "head", "train_fraction"]
LABELS = ["setup", "mode_label"]  # functions of CONFIG, carried along for display
FACTORS = ("backbone", "mode_label")  # a pair answers one question when it differs in exactly one of these
# Where each metric can lie. Cutting an interval to this range keeps its coverage (the truth is always inside).
RANGES = {"kappa": (-1.0, 1.0)} | {m: (0.0, 1.0) for m in (
    "accuracy", "balanced_accuracy", "auroc", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro", "ece")}


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval over independent replicates (seeds); needs two or more values."""
    values = np.asarray(values, dtype=float)
    mean, sem = float(values.mean()), float(stats.sem(values))
    if sem == 0:  # identical seeds: scipy would answer NaN for a zero scale
        return mean, mean, mean
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def _summarise(runs: pd.DataFrame, metrics: list[str]) -> dict:
    row = {"n_seeds": len(runs), "seeds": ",".join(str(s) for s in sorted(runs["seed"])),
           "ci": "bootstrap" if len(runs) == 1 else f"t over {len(runs)} seeds"}
    for name in metrics:
        finite = runs[np.isfinite(runs[name].astype(float))]
        if len(finite) >= 2:
            mean, low, high = t_interval(finite[name].to_numpy())
            lo, hi = RANGES.get(name, (-np.inf, np.inf))
            row[name], row[f"{name}_low"], row[f"{name}_high"] = mean, max(low, lo), min(high, hi)
        elif len(finite) == 1:  # one seed (or one with a defined value): its own bootstrap interval
            row.update({key: finite[key].iloc[0] for key in (name, f"{name}_low", f"{name}_high")})
        else:
            row.update(dict.fromkeys((name, f"{name}_low", f"{name}_high"), float("nan")))
    return row


def aggregate_seeds(index: RunIndex) -> pd.DataFrame:
    """One row per task × backbone × mode (× head) × train fraction: the run's CI, or the t-interval over seeds."""
    rows = [dict(zip(CONFIG + LABELS, key)) | _summarise(runs, index.metrics)
            for key, runs in index.runs.groupby(CONFIG + LABELS, dropna=False, sort=False)]
    return pd.DataFrame(rows)


def one_factor_pairs(setups: pd.DataFrame) -> list[tuple[str, str]]:
    """(a, b) setups that differ in exactly one factor: backbones within a mode, modes within a backbone."""
    rows = setups[["setup", *FACTORS]].drop_duplicates().to_dict("records")
    return [(a["setup"], b["setup"]) for i, a in enumerate(rows) for b in rows[i + 1:]
            if sum(a[f] != b[f] for f in FACTORS) == 1]


def _same_samples(runs: pd.DataFrame) -> list[pd.DataFrame]:
    """Split the runs by their exact test set (ids and labels), which paired tests need to share."""
    blocks: dict[tuple, list[tuple[pd.Series, pd.DataFrame]]] = {}
    for _, run in runs.iterrows():
        test = read_predictions(run["run_dir"])
        key = (tuple(test["sample_id"]), tuple(test["label"]), tuple(class_names(test)))
        blocks.setdefault(key, []).append((run, test))
    return [pd.DataFrame({"run": [r for r, _ in b], "test": [t for _, t in b]}) for b in blocks.values()]


def _compare_block(block: pd.DataFrame) -> pd.DataFrame:
    runs = pd.DataFrame(list(block["run"]))
    pairs = one_factor_pairs(runs)
    if not pairs:
        return pd.DataFrame(columns=list(COLUMNS))
    first, test = runs.iloc[0], block["test"].iloc[0]
    y = label_arrays(test)[0]
    groups = test["group"].to_numpy() if test["group"].notna().all() else None
    probs = {run["setup"]: label_arrays(t)[1] for (_, run), t in zip(runs.iterrows(), block["test"])}
    spec = BootstrapSpec(n=int(first["bootstrap_n"]), seed=int(first["bootstrap_seed"]))
    return compare_models(y, probs, spec, groups, pairs)


def pairwise_comparisons(index: RunIndex) -> pd.DataFrame:
    """Paired tests per task, train fraction and seed on shared test samples; Holm over all pairs of a task."""
    parts = []
    for (task, fraction, seed), runs in index.runs.groupby(["task", "train_fraction", "seed"], sort=True):
        for block in _same_samples(runs):
            frame = _compare_block(block)
            if len(frame):
                parts.append(frame.assign(task=task, train_fraction=fraction, seed=seed, n_test=len(block["test"][0])))
    lead = ["task", "train_fraction", "seed", "n_test"]
    if not parts:
        return pd.DataFrame(columns=lead + list(COLUMNS))
    out = pd.concat(parts, ignore_index=True)[lead + list(COLUMNS)]
    for test in ("delong", "mcnemar"):  # compare_models corrected within one seed; the family is the whole task
        out[f"{test}_p_holm"] = out.groupby("task")[f"{test}_p"].transform(lambda p: holm(p.to_numpy(dtype=float)))
    return out
