"""Beyond the internal test split, from finished runs: each setup on its external sets (metric, gap to the internal
test, paired comparisons) and on the test split's subgroups.

Everything is recomputed from predictions.csv, never copied from metrics.json, so that a setup's seeds combine into
one estimate and the analysis can be redone from the run folders alone. A setup, set or column that cannot be
analysed is named in the summary's notes with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from medtransfer.config import TrainConfig
from medtransfer.data.external import EXTERNAL_SPLIT
from medtransfer.data.subgroup_spec import SubgroupColumn, parse_subgroups
from medtransfer.data.table import METADATA_PREFIX
from medtransfer.evaluation.generalisation import ScoredSet, external_spec, gap_ci, gap_label, without_every_class
from medtransfer.evaluation.metric_registry import paper_metrics
from medtransfer.evaluation.seeds import UNITS, combined_ci
from medtransfer.evaluation.subgroups import subgroup_analysis, subgroup_labels
from medtransfer.report.aggregate import Replicates, Summary, recorded_spec, setup_pairs, setup_replicates
from medtransfer.report.collect import RunIndex
from medtransfer.report.predictions import read_predictions
from medtransfer.rundir import PREDICTIONS_FILE, RunDir

SUBGROUP_MIN = TrainConfig.model_fields["subgroup_min"].default  # what a run that did not record it used
LABELS = ["task", "setup", "backbone", "mode_label", "mode_name", "train_fraction"]


@dataclass
class ShiftSummary:
    """Per setup: its external sets (with the gap to the internal test), the paired comparisons on each external set,
    its subgroups (too-few ones as rows with `analysed` False), each column's worst subgroup and largest gap, and
    what could not be analysed and why (external sets' notes, subgroups' notes)."""

    external: pd.DataFrame = field(default_factory=pd.DataFrame)
    external_pairs: pd.DataFrame = field(default_factory=pd.DataFrame)
    subgroups: pd.DataFrame = field(default_factory=pd.DataFrame)
    subgroup_gaps: pd.DataFrame = field(default_factory=pd.DataFrame)
    external_notes: list[str] = field(default_factory=list)
    subgroup_notes: list[str] = field(default_factory=list)


@dataclass
class _Setup:
    """One setup of the summary: its main-table row, labels, internal test replicates, runs and saved configs."""

    row: pd.Series
    labels: dict
    reps: Replicates
    runs: pd.DataFrame
    configs: list[dict]

    @cached_property
    def test_predictions(self) -> list[pd.DataFrame]:
        """Each run's test predictions, read once for all of the setup's subgroup columns."""
        return [read_predictions(d) for d in self.runs["run_dir"]]

    @property
    def name(self) -> str:
        """How a note names the setup."""
        return f"{self.labels['task']} / {self.labels['setup']}"


def _setups(index: RunIndex, summary: Summary) -> list[_Setup]:
    """The summary's setups with their runs, matched on task, setup name and train fraction (unique per setup)."""
    def key(frame: pd.Series | dict) -> tuple:
        return frame["task"], frame["setup"], float(frame["train_fraction"])

    runs = {key(group.iloc[0]): group for _, group in index.runs.groupby(index.setup_keys or ["task"], dropna=False,
                                                                          sort=False)}
    out = []
    # summarise appends a setup's row and its replicates together, so the two lists align
    for (_, row), (labels, reps) in zip(summary.setups.iterrows(), summary.replicates):
        mine = runs[key(labels)]
        out.append(_Setup(row, labels, reps, mine, [RunDir(d).config() for d in mine["run_dir"]]))
    return out


def seed_thresholds(reps: Replicates) -> list[float | None] | None:
    """Each replicate's one binary threshold (None: argmax, multi-class); None when a replicate holds several (folds
    pooled out of fold each fixed their own), which a per-seed analysis cannot take."""
    out: list[float | None] = []
    for t in reps.thresholds:
        if t is not None and np.ptp(t) > 0:
            return None
        out.append(None if t is None else float(t[0]))
    return out


def _scored(name: str, reps: Replicates, keep: list[int] | None = None) -> ScoredSet | None:
    thresholds = seed_thresholds(reps)
    if thresholds is None:
        return None
    keep = list(range(len(reps.probs))) if keep is None else keep
    return ScoredSet(name, reps.y, [reps.probs[k] for k in keep], reps.groups, [thresholds[k] for k in keep])


def external_label(n: int, unit: str, name: str, n_resamples: int, replicate: str = "seed", level: float = 0.95) -> str:
    """Caption of an external set's combined interval (seeds.combined_ci on the set's own bootstrap stream)."""
    seeds = f"{n} {replicate}" + ("s" if n > 1 else "")
    between = ", combined with the variation between them" if n > 1 else ""
    return (f"{100 * level:g}% CI, {n_resamples}-resample bootstrap over external set {name}'s {UNITS[unit]} (its "
            f"own stream), {seeds}{between}")


def _columns(prefix: str, ci: dict[str, dict[str, float]]) -> dict:
    return {f"{prefix}{m}{suffix}": e[key] for m, e in ci.items() if not m.startswith("recall_c")
            for suffix, key in (("", "value"), ("_low", "low"), ("_high", "high"))}


def _external_row(setup: _Setup, name: str, ext: Replicates, notes: list[str]) -> dict:
    first = setup.runs.iloc[0]
    spec, ordinal = recorded_spec(first), bool(first["ordinal"])
    own = external_spec(spec, name)
    unit = "sample" if ext.groups is None else "group"
    thresholds = None if all(t is None for t in ext.thresholds) else ext.thresholds
    absent = [c for c, n in zip(ext.classes, np.bincount(ext.y, minlength=len(ext.classes))) if n == 0]
    if absent:
        notes.append(f"{setup.name} on {name}: no samples of class(es) {absent}, so no value for the metrics that "
                     "need every class")
    ci = without_every_class(combined_ci(ext.y, ext.probs, own, ext.groups, thresholds=thresholds, ordinal=ordinal),
                             bool(absent))
    row = setup.labels | {"external": name, "n_external": len(ext.y), "n_cases_external":
                          len(ext.y) if ext.groups is None else len(np.unique(ext.groups)),
                          "n_seeds": len(ext.seeds), "seeds": ",".join(ext.seeds), "internal_ci": setup.row["ci"],
                          "external_ci": external_label(len(ext.seeds), unit, name, own.n, ext.replicate)}
    row |= _columns("internal_", {m: {"value": setup.row[m], "low": setup.row[f"{m}_low"],
                                      "high": setup.row[f"{m}_high"]} for m in ci if f"{m}_low" in setup.row})
    row |= _columns("external_", ci)
    keep = [setup.reps.seeds.index(s) for s in ext.seeds if s in setup.reps.seeds]
    internal, external = _scored("test", setup.reps, keep), _scored(name, ext)
    # the Internal column is every internal replicate's: a gap over fewer would not be Internal − External
    if sorted(ext.seeds) != sorted(setup.reps.seeds) or internal is None or external is None:
        # folds pooled out of fold are one replicate per seed on test but k fold models on the external set
        notes.append(f"{setup.name} on {name}: no gap, the internal test replicates ({', '.join(setup.reps.seeds)}) "
                     f"are not the external set's ({', '.join(ext.seeds)})")
        return row | {"gap_ci": ""}
    gap = gap_ci(internal, external, spec, ordinal=ordinal)
    return row | _columns("gap_", gap) | {"gap_ci": gap_label(len(keep), internal.unit, unit, spec.n, level=spec.level)}


def _external_sets(setup: _Setup) -> list[str]:
    return list(dict.fromkeys(n for c in setup.configs for n in (c.get("external") or {})))


def _externals(setups: list[_Setup], index: RunIndex, notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, pairs, blocks = [], [], {}
    for setup in setups:
        for name in _external_sets(setup):
            runs = setup.runs[[name in (c.get("external") or {}) for c in setup.configs]]
            ext, left_out = setup_replicates(runs, patients=False, pooled=False, split=f"{EXTERNAL_SPLIT}{name}")
            notes += [f"{setup.name} on {name}: {entry['run_dir']} left out: {entry['reason']}" for entry in left_out]
            if len(runs) < len(setup.runs):
                notes.append(f"{setup.name}: {len(setup.runs) - len(runs)} of its runs were not scored on {name}")
            if ext is None or not len(ext.y):
                notes.append(f"{setup.name} on {name}: no `{EXTERNAL_SPLIT}{name}` rows in {PREDICTIONS_FILE}")
                continue
            rows.append(_external_row(setup, name, ext, notes))
            blocks.setdefault(name, []).append((setup.labels, ext))
    for name, groups in blocks.items():  # Holm per task within each external set
        pairs.append(setup_pairs(groups, index, external=name).assign(external=name))
    frame = pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame()
    return pd.DataFrame(rows), frame


def _subgroup_columns(setup: _Setup, notes: list[str]) -> tuple[list[SubgroupColumn], int]:
    """The columns every run of the setup named (the others in `notes`), and the largest `subgroup_min` among them."""
    named = [{c.text: c for c in parse_subgroups(cfg.get("subgroups")) or []} for cfg in setup.configs]
    every = {text: c for one in named for text, c in one.items()}
    common = [c for text, c in every.items() if all(text in one for one in named)]
    notes += [f"{setup.name}: subgroup column {text} left out, only {sum(text in one for one in named)} of its "
              f"{len(named)} runs named it" for text in every if not all(text in one for one in named)]
    return common, max(int(cfg.get("subgroup_min") or SUBGROUP_MIN) for cfg in setup.configs)


def _metadata(setup: _Setup, column: str) -> pd.Series | None:
    """The column's raw value for each of the replicates' test samples, in their order (None: not recorded)."""
    frames = setup.test_predictions
    if not all(column in f for f in frames):
        return None
    values = pd.concat(frames).drop_duplicates("sample_id").set_index("sample_id")[column]
    return values.reindex(list(setup.reps.ids)).reset_index(drop=True)


def shown_metrics(metric: str) -> list[str]:
    """The report's metric, then the paper's (the subgroup tables' and figures' metrics)."""
    return list(dict.fromkeys([metric, *paper_metrics()]))


def _subgroup_rows(setup: _Setup, column: SubgroupColumn, block: dict) -> tuple[list[dict], list[dict]]:
    lead = setup.labels | {"column": column.text, "min_cases": block["min_cases"], "unit": block["unit"]}
    rows = [lead | {"subgroup": label, "n": s["n"], "n_cases": s["n_cases"], "analysed": True,
                    "interval": block["interval"]} | _columns("", s["metrics"])
            for label, s in block["subgroups"].items()]
    rows += [lead | {"subgroup": label, "n": np.nan, "n_cases": n, "analysed": False,
                     "interval": f"fewer than {block['min_cases']} cases: listed, not analysed"}
             for label, n in block["too_few"].items()]
    gaps = [lead | {"metric": m, "worst_subgroup": block["worst"].get(m, {}).get("subgroup")}
            | {f"worst{s}": block["worst"].get(m, {}).get(k, np.nan) for s, k in (("", "value"), ("_low", "low"),
                                                                                   ("_high", "high"))}
            | {f"gap{s}": g[k] for s, k in (("", "value"), ("_low", "low"), ("_high", "high"))}
            | {"highest": g["highest"], "lowest": g["lowest"], "gap_interval": block["gap_interval"]}
            for m, g in block["gap"].items() if not m.startswith("recall_c")]
    return rows, gaps


def _subgroups(setups: list[_Setup], metric: str, notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, gaps = [], []
    for setup in setups:
        columns, min_cases = _subgroup_columns(setup, notes)
        first = setup.runs.iloc[0]
        scored = _scored("test", setup.reps)
        if columns and scored is None:
            notes.append(f"{setup.name}: no subgroups, its folds each fixed their own threshold (pooled out of fold)")
            continue
        for column in columns:
            values = _metadata(setup, f"{METADATA_PREFIX}{column.column}")
            if values is None:
                notes.append(f"{setup.name}: subgroup column {column.column} is not in every run's {PREDICTIONS_FILE}")
                continue
            labels = subgroup_labels(values, column)
            block = subgroup_analysis(scored, labels, recorded_spec(first), min_cases, ordinal=bool(first["ordinal"]),
                                      names=shown_metrics(metric))
            more_rows, more_gaps = _subgroup_rows(setup, column, block)
            rows += more_rows
            gaps += more_gaps
    return pd.DataFrame(rows), pd.DataFrame(gaps)


def summarise_shift(index: RunIndex, summary: Summary, metric: str = "auroc") -> ShiftSummary:
    """Every setup's external sets, their paired comparisons, and its subgroups; empty frames for runs without."""
    external_notes: list[str] = []
    subgroup_notes: list[str] = []
    setups = _setups(index, summary)
    external, pairs = _externals(setups, index, external_notes)
    subgroups, gaps = _subgroups(setups, metric, subgroup_notes)
    return ShiftSummary(external, pairs, subgroups, gaps, external_notes, subgroup_notes)
