"""The report's tables: main results (paper layout), pairwise comparisons and cost; each as Markdown, LaTeX, CSV."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.evaluation.metric_registry import METRIC_REGISTRY, more_metrics, paper_metrics, patient_metrics
from medtransfer.report.collect import mode_label
from medtransfer.report.render import DASH, Table, ci_cell, fmt_number, latex_document, to_latex, to_markdown
from medtransfer.rundir import METRICS_FILE


def setup_cells(r: pd.Series) -> list[str]:
    """The Backbone and Mode cells: together the setup's one name (`Backbone / Mode` is the figures' label)."""
    head = r.get("head")
    return [r["backbone"], r.get("mode_name") or mode_label(r["mode"], head if isinstance(head, str) else None)]


def _fractions_vary(frame: pd.DataFrame) -> bool:
    return frame["train_fraction"].nunique() > 1 or bool((frame["train_fraction"] != 1.0).any())


def _group_starts(tasks: pd.Series) -> list[int]:
    return [i for i in range(len(tasks)) if i == 0 or tasks.iloc[i] != tasks.iloc[i - 1]]


def best_rows(agg: pd.DataFrame, metric: str = "val_auroc") -> pd.Series:
    """True on the row with the best validation `metric` of each task: a choice made on val, never on test."""
    best = pd.Series(False, index=agg.index)
    if metric not in agg:
        return best
    for _, rows in agg.groupby("task"):
        values = rows[metric].astype(float)
        if values.notna().any():
            best[values.idxmin() if _lower_is_better(metric) else values.idxmax()] = True
    return best


def _lower_is_better(metric: str) -> bool:
    """A validation loss, or a val_ metric declared lower-is-better (val_auroc and val_accuracy are not)."""
    name = metric.removeprefix("val_")
    return metric.endswith("loss") or (name in METRIC_REGISTRY and METRIC_REGISTRY.get(name).higher_is_better is False)


def selection_metric(agg: pd.DataFrame) -> str:
    """The validation metric the runs selected their epochs on (val_auroc unless every run chose another)."""
    chosen = {c for c in agg.get("select", pd.Series(dtype=str)).dropna()}
    return chosen.pop() if len(chosen) == 1 and chosen <= set(agg) else "val_auroc"


def _interval_caption(agg: pd.DataFrame) -> str:
    labels = sorted(agg["ci"].dropna().unique())
    if len(labels) == 1:
        return labels[0]
    return "per row, as the 95% CI column says"


def _with_folds(agg: pd.DataFrame) -> bool:
    return "n_folds" in agg and bool((agg["n_folds"] >= 2).any())


def result_table(agg: pd.DataFrame, names: Sequence[str], what: str, bold_best: bool = True) -> Table:
    """Task | Backbone | Mode | [Train %] | [Folds] | metrics… | [AUROC per fold] | 95% CI over, one row a setup."""
    agg = agg.reset_index(drop=True)
    with_fraction, with_folds = _fractions_vary(agg), _with_folds(agg)
    metrics = {METRIC_REGISTRY.get(m).column: m for m in names if m in agg}
    header = ["Task", "Backbone", "Mode"] + (["Train %"] if with_fraction else [])
    header += (["Folds"] if with_folds else []) + list(metrics)
    header += (["AUROC per fold"] if with_folds and "auroc_folds" in agg else []) + ["95% CI over"]
    select = selection_metric(agg)
    best = best_rows(agg, select) if bold_best else pd.Series(False, index=agg.index)
    rows, bold = [], []
    for i, r in agg.iterrows():
        labels = [r["task"], *setup_cells(r)]
        labels += [fmt_number(r["train_fraction"], 0, 100)] if with_fraction else []
        labels += [str(int(r["n_folds"])) if r["n_folds"] >= 2 else DASH] if with_folds else []
        cells = [ci_cell(r[m], r[f"{m}_low"], r[f"{m}_high"], percent=METRIC_REGISTRY.get(m).percent)
                 for m in metrics.values()]
        cells += [r.get("auroc_folds") if isinstance(r.get("auroc_folds"), str) else DASH] \
            if with_folds and "auroc_folds" in agg else []
        rows.append(labels + cells + [str(r["ci"])])
        bold.append([False] + [bool(best[i])] * (len(header) - 2) + [False])
    shown = {"auroc": "AUROC", "accuracy": "accuracy", "loss": "loss"}.get(select.removeprefix("val_"), select)
    chosen = (f" Bold: the setup with the best validation {shown} of each task (chosen on val, reported on test)."
              if best.any() else "")
    folds = (" Cross-validated setups pool the out-of-fold test predictions of all folds into one estimate; the "
             "folds' own AUROCs are listed beside it." if with_folds else "")
    caption = (f"{what}, with 95% confidence intervals ({_interval_caption(agg)}). The bootstrap resamples the test "
               "patients (or images); with several seeds each resample averages the seeds and adds a between-seed term, "
               "so the interval covers both test sampling and training seeds (docs/methods.md; ECE: its bias-corrected "
               f"interval).{folds}{chosen}")
    columns = [c for c in ["task", "setup", "backbone", "weights", "mode", "head", "train_fraction", "n_folds",
                           "n_seeds", "seeds", "n_test", "ci", select] if c in agg]
    numbers = [c for m in metrics.values() for c in (m, f"{m}_low", f"{m}_high", f"{m}_folds") if c in agg]
    raw = agg[columns + numbers].assign(best=best.to_numpy())
    # The interval's description is a sentence: in LaTeX a wrapping column, so the table fits a landscape page.
    return Table(header, rows, caption, raw, bold, _group_starts(agg["task"]), repeat_first=False,
                 latex_widths={"95% CI over": "3.6cm", "AUROC per fold": "2.2cm"}, html_key="95% CI over")


def main_table(agg: pd.DataFrame) -> Table:
    """The paper's layout: Accuracy, weighted Precision, Recall and F1, and AUROC, per setup."""
    return result_table(agg, paper_metrics(), "Test-set results in % (precision, recall and F1 support-weighted)")


def patient_table(patients: pd.DataFrame) -> Table:
    """The main metrics with one pooled prediction per patient (where the data has patients)."""
    return result_table(patients, patient_metrics(),
                        "Patient-level test results in % (image probabilities pooled per patient)", bold_best=False)


def more_table(agg: pd.DataFrame) -> Table:
    """Agreement, calibration and (binary tasks) the operating point fixed on val."""
    return result_table(agg, more_metrics(), "More test metrics, in % unless plain numbers: sensitivity, specificity, "
                        "PPV and NPV at the threshold fixed on val (Youden's J) for binary tasks; kappa unweighted, "
                        "quadratic only for ordinal classes; ECE debiased, in %; Brier score and calibration slope "
                        "and intercept as plain numbers", bold_best=False)


def per_class_table(per_class: pd.DataFrame) -> Table:
    """Task | Setup | [Train %] | Class | Test cases | Recall [CI]: how each class fares, rare ones included."""
    per_class = per_class.reset_index(drop=True)
    # A setup run on a fraction of the training data keeps its name: the fraction tells its rows apart.
    with_fraction = bool(len(per_class)) and _fractions_vary(per_class)
    header = ["Task", "Setup"] + (["Train %"] if with_fraction else []) + ["Class", "Test cases", "Recall"]
    rows = [[r["task"], r["setup"]] + ([fmt_number(r["train_fraction"], 0, 100)] if with_fraction else [])
            + [str(r["class"]), str(int(r["n_test"])), ci_cell(r["recall"], r["recall_low"], r["recall_high"])]
            for _, r in per_class.iterrows()]
    caption = ("Per-class recall (sensitivity for each class) on test in %, with the 95% CI of the main table's "
               "method for that setup. Test cases: images of the class in the test split (for cross-validation, "
               "in all folds' held-out parts).")
    return Table(header, rows, caption, per_class, [], _group_starts(per_class["task"]) if len(per_class) else [],
                 repeat_first=False)


def p_cell(p: float) -> str:
    """A p-value: three decimals, `<0.001` below that, a dash when not computed."""
    if not np.isfinite(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def pairwise_table(pairs: pd.DataFrame, alpha: float = 0.05) -> Table:
    """One row per compared pair (seeds aggregated): paired differences a − b with CIs, the tests and Holm."""
    pairs = pairs.reset_index(drop=True)
    with_fraction = _fractions_vary(pairs) if len(pairs) else False
    header = ["Task"] + (["Train %"] if with_fraction else []) + [
        "A", "B", "Seeds", "ΔAUROC", "ΔAccuracy", "AUROC p", "Accuracy p", "AUROC p (Holm)", "Accuracy p (Holm)",
        "Tests"]
    rows, bold = [], []
    for _, r in pairs.iterrows():
        lead = [r["task"]] + ([fmt_number(r["train_fraction"], 0, 100)] if with_fraction else [])
        cells = [r["a"], r["b"], f"{int(r['n_seeds_a'])} vs {int(r['n_seeds_b'])}",
                 ci_cell(r["auroc_diff"], r["auroc_low"], r["auroc_high"], True),
                 ci_cell(r["accuracy_diff"], r["accuracy_low"], r["accuracy_high"], True)]
        ps = [r["auroc_p"], r["accuracy_p"], r["auroc_p_holm"], r["accuracy_p_holm"]]
        rows.append(lead + cells + [p_cell(p) for p in ps] + [f"{r['auroc_test']}; {r['accuracy_test']}"])
        bold.append([False] * (len(lead) + len(cells) + 2) + [bool(p < alpha) for p in ps[2:]] + [False])
    caption = ("Paired comparisons A − B on the same test samples, each pair once, in percentage points: the "
               "difference of the seed-averaged metrics with its 95% paired-bootstrap CI (patients resampled whole "
               "when the data has groups; seeds averaged inside each resample). The p-values come from the tests "
               "named in the last column, which account for several images per patient where the data has patients. "
               f"Holm's correction runs over all distinct pairs of a task; adjusted p < {alpha} in bold.")
    return Table(header, rows, caption, pairs, bold, _group_starts(pairs["task"]) if len(pairs) else [])


def _seconds(r: pd.Series, key: str) -> str:
    text = fmt_number(r.get(key), 1)
    return f"{text} (cached)" if key == "extract_seconds" and text != DASH and r.get("cache_hit") in (True, 1) else text


def _params(n: float | None) -> str:
    return DASH if fmt_number(n) == DASH else f"{n / 1e6:.2f} M"


def cost_table(runs: pd.DataFrame) -> Table:
    """Per run: feature-extraction and training seconds, throughput, peak memory and parameter count."""
    runs = runs.reset_index(drop=True)
    header = ["Task", "Backbone", "Mode", "Train %", "Seed", "Fold", "Extract (s)", "Train (s)", "Images/s",
              "Peak memory (MB)", "Parameters"]
    # The Mode cell carries the other varied settings (lr=…, k-fold CV), so reruns of distinct setups stay apart.
    rows = [[r["task"], *setup_cells(r),
             fmt_number(r["train_fraction"], 0, 100), str(r["seed"]),
             str(int(r["fold"])) if int(r.get("folds") or 0) >= 2 else DASH, _seconds(r, "extract_seconds"),
             _seconds(r, "train_seconds"), fmt_number(r.get("images_per_second"), 1),
             fmt_number(r.get("peak_memory_mb"), 0), _params(r.get("n_params"))] for _, r in runs.iterrows()]
    caption = f"Cost per run ({DASH}: not recorded). Extraction is the frozen backbone's one forward pass over the data."
    columns = ["task", "setup", "backbone", "model", "mode", "head", "train_fraction", "seed", "fold", "extract_seconds",
               "train_seconds", "images_per_second", "peak_memory_mb", "n_params", "cache_hit", "run_dir"]
    return Table(header, rows, caption, runs.reindex(columns=columns), [], _group_starts(runs["task"]), False)


def duplicates_table(runs: pd.DataFrame) -> Table:
    """Per task and --dedup action: exact and near-duplicate pairs, those left across splits, and copies dropped."""
    runs = runs[runs["duplicates_exact"].notna()].drop_duplicates(["task", "dedup"]).reset_index(drop=True)
    header = ["Task", "Dedup", "Exact pairs", "Near pairs", "Across splits", "Where", "Dropped", "Example"]
    rows = [[r["task"], str(r["dedup"]), str(int(r["duplicates_exact"])), str(int(r["duplicates_near"])),
             str(int(r["duplicates_across"])), r["duplicates_spans"] or DASH, str(int(r["duplicates_dropped"])),
             r["duplicates_example"] or DASH] for _, r in runs.iterrows()]
    caption = ("Duplicate images found at start-up (exact: same decoded pixels; near: perceptual hash within the "
               f"threshold of {METRICS_FILE}'s `duplicates`). Across splits: pairs left in two splits, which inflate "
               "the metrics; --dedup group (carved splits) or drop removes them.")
    columns = ["task", "dedup", "duplicates_exact", "duplicates_near", "duplicates_across", "duplicates_spans",
               "duplicates_dropped", "duplicates_example", "run_dir"]
    return Table(header, rows, caption, runs.reindex(columns=columns), [], _group_starts(runs["task"]), False)


def write_table(table: Table, folder: Path, name: str) -> list[Path]:
    """NAME.md, NAME.tex (table environment) and NAME.csv (raw numbers) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.{ext}" for ext in ("md", "tex", "csv")]
    paths[0].write_text(to_markdown(table))
    paths[1].write_text(to_latex(table, f"tab:{name.replace('_', '-')}"))
    table.raw.to_csv(paths[2], index=False)
    return paths


def write_standalone(table: Table, folder: Path, name: str) -> Path:
    """NAME_standalone.tex: the table as a complete LaTeX document."""
    path = folder / f"{name}_standalone.tex"
    path.write_text(latex_document(to_latex(table, f"tab:{name.replace('_', '-')}")))
    return path


def _notes(notes: list[str]) -> str:
    return (" Left out: " + "; ".join(notes) + ".") if notes else ""


def _lead(r: pd.Series, with_fraction: bool) -> list[str]:
    return [r["task"], r["setup"]] + ([fmt_number(r["train_fraction"], 0, 100)] if with_fraction else [])


def external_table(external: pd.DataFrame, metric: str, notes: list[str]) -> Table:
    """Task | Setup | [Train %] | External set | Cases | internal, external and gap (internal − external) of `metric`
    with CIs | what each interval covers."""
    external = external.reset_index(drop=True)
    with_fraction = _fractions_vary(external)
    name, percent = METRIC_REGISTRY.get(metric).column, METRIC_REGISTRY.get(metric).percent
    header = ["Task", "Setup"] + (["Train %"] if with_fraction else []) + [
        "External set", "Cases", f"Internal {name}", f"External {name}", f"Gap {name}", "95% CI over"]
    rows = []
    for _, r in external.iterrows():
        cells = [ci_cell(r.get(f"{side}_{metric}"), r.get(f"{side}_{metric}_low"), r.get(f"{side}_{metric}_high"),
                         sign=side == "gap", percent=percent) for side in ("internal", "external", "gap")]
        covers = f"internal: {r['internal_ci']}; external: {r['external_ci']}; gap: {r['gap_ci'] or 'not computed'}"
        rows.append(_lead(r, with_fraction) + [r["external"], str(int(r["n_cases_external"]))] + cells + [covers])
    unit = "in %" if percent else "as plain numbers"
    caption = (f"Each setup on each external set, test {name} {unit}. Internal: the main table's estimate on the "
               "internal test split. External: the same models scored on the whole external set (the binary threshold "
               "fixed on val), seeds combined as in the main table, the set's patients (or images) resampled on its "
               "own bootstrap stream. Gap: internal minus external, the two sets bootstrapped independently, "
               "conditional on the trained models; a CI that excludes 0 is a drop (or rise) beyond the sampling noise "
               "of both sets. Cases: the external set's patients (or images). The last column says what each "
               f"interval covers.{_notes(notes)}")
    return Table(header, rows, caption, external, [], _group_starts(external["task"]), repeat_first=False,
                 latex_widths={"95% CI over": "5cm"}, html_key="95% CI over")


def external_pairs_table(pairs: pd.DataFrame, alpha: float = 0.05) -> Table:
    """The pairwise table's comparisons on each external set: Task | External set | … (Holm per task and set)."""
    pairs = pairs.reset_index(drop=True)
    table = pairwise_table(pairs, alpha)
    table.header.insert(1, "External set")
    for row, bold, (_, r) in zip(table.rows, table.bold, pairs.iterrows()):
        row.insert(1, r["external"])
        bold.insert(1, False)
    table.group_starts = _group_starts(pairs["task"] + "\n" + pairs["external"]) if len(pairs) else []
    table.caption = ("Paired comparisons A − B on each external set, the same pairs as on the internal test split, "
                     "in percentage points: the difference of the seed-averaged metrics with its 95% paired-bootstrap "
                     "CI over the external set's patients (or images; its own bootstrap stream, seeds averaged inside "
                     "each resample). The p-values come from the tests named in the last column. Holm's correction runs "
                     f"over the pairs of a task on one external set; adjusted p < {alpha} in bold.")
    return table


def _gap_pairs(gaps: pd.DataFrame) -> str:
    """Which subgroups each metric's largest gap is between: `a − b` once when every metric shares the pair."""
    by_pair: dict[str, list[str]] = {}
    for _, g in gaps.iterrows():
        by_pair.setdefault(f"{g['highest']} − {g['lowest']}", []).append(METRIC_REGISTRY.get(g["metric"]).column)
    if len(by_pair) == 1:
        return f"largest gap: {next(iter(by_pair))}"
    return "largest gap: " + "; ".join(f"{pair} ({', '.join(names)})" for pair, names in by_pair.items())


def subgroups_table(subgroups: pd.DataFrame, gaps: pd.DataFrame, metrics: Sequence[str], notes: list[str]) -> Table:
    """Task | Setup | Column | Subgroup | Cases | Images | metrics with CIs | 95% CI over: each subgroup (the too-few
    listed with their counts), the worst in bold, then the column's largest gap."""
    metrics = [m for m in metrics if m in subgroups]
    header = ["Task", "Setup", "Column", "Subgroup", "Cases", "Images",
              *(METRIC_REGISTRY.get(m).column for m in metrics), "95% CI over"]
    rows, bold, starts = [], [], []
    keys = ["task", "setup", "train_fraction", "column"]
    for key, block in subgroups.groupby(keys, sort=False):
        mine = gaps[(gaps[keys] == pd.Series(dict(zip(keys, key)))).all(axis=1)] if len(gaps) else gaps
        worst = dict(zip(mine.get("metric", []), mine.get("worst_subgroup", [])))
        starts.append(len(rows))
        for _, r in block.iterrows():
            cells = [ci_cell(r[m], r[f"{m}_low"], r[f"{m}_high"], percent=METRIC_REGISTRY.get(m).percent)
                     if r["analysed"] else DASH for m in metrics]
            rows.append([r["task"], r["setup"], r["column"], r["subgroup"], str(int(r["n_cases"])),
                         fmt_number(r["n"], 0), *cells, r["interval"]])
            bold.append([False] * 6 + [r["analysed"] and worst.get(m) == r["subgroup"] for m in metrics] + [False])
        if len(mine):
            shown = mine.set_index("metric")
            cells = [ci_cell(*shown.loc[m, ["gap", "gap_low", "gap_high"]], sign=True,
                             percent=METRIC_REGISTRY.get(m).percent) if m in shown.index else DASH for m in metrics]
            rows.append([key[0], key[1], key[3], _gap_pairs(mine), DASH, DASH, *cells, mine["gap_interval"].iloc[0]])
            bold.append([False] * len(header))
    caption = ("Test-split subgroups per metadata column, metrics in % (plain numbers where the main table has them "
               "so). Cases: patients (or lesions) where the data has them, else images; a subgroup with fewer cases "
               "than the runs' subgroup_min is listed with its count, not analysed. Bold: each column's worst "
               "subgroup per metric. The 'largest gap' row: the highest minus the lowest subgroup of each metric, the "
               "pair chosen on the point values, its CI from one joint bootstrap of the test split. The last column "
               f"says what each interval covers.{_notes(notes)}")
    raw = pd.concat([subgroups, gaps.assign(subgroup="largest gap")], ignore_index=True) if len(gaps) else subgroups
    return Table(header, rows, caption, raw, bold, starts, repeat_first=False, latex_widths={"95% CI over": "5cm"},
                 html_key="95% CI over")
