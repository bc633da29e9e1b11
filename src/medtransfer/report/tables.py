"""The report's tables: main results (paper layout), pairwise comparisons and cost; each as Markdown, LaTeX, CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.report.render import DASH, Table, ci_cell, fmt_number, latex_document, to_latex, to_markdown

MAIN_METRICS = {"Accuracy": "accuracy", "Precision": "precision_weighted", "Recall": "recall_weighted",
                "F1": "f1_weighted", "AUROC": "auroc"}


def freeze_label(mode: str, head: str | None) -> str:
    """The Freeze column: `yes (<probe head>)` for a frozen backbone, `no` when fine-tuned."""
    return f"yes ({head})" if mode == "frozen" else "no"


def _fractions_vary(frame: pd.DataFrame) -> bool:
    return frame["train_fraction"].nunique() > 1 or bool((frame["train_fraction"] != 1.0).any())


def _group_starts(tasks: pd.Series) -> list[int]:
    return [i for i in range(len(tasks)) if i == 0 or tasks.iloc[i] != tasks.iloc[i - 1]]


def best_rows(agg: pd.DataFrame, metric: str = "auroc") -> pd.Series:
    """True on the row with the highest `metric` value of each task (none where every value is undefined)."""
    best = pd.Series(False, index=agg.index)
    for _, rows in agg.groupby("task"):
        values = rows[metric].astype(float)
        if values.notna().any():
            best[values.idxmax()] = True
    return best


def _interval_note(agg: pd.DataFrame) -> str:
    counts = sorted(agg["n_seeds"].unique())
    several = [n for n in counts if n > 1]
    parts = [f"mean and Student-t interval over {' or '.join(map(str, several))} seeds, cut to the metric's range"]
    parts += ["rows with one seed: that run's percentile bootstrap"] if 1 in counts else []
    return "; ".join(parts) if several else "percentile bootstrap of the single run"


def main_table(agg: pd.DataFrame) -> Table:
    """Task | Backbone | Freeze | [Train %] | Accuracy | Precision | Recall | F1 | AUROC, best AUROC per task in bold."""
    agg = agg.reset_index(drop=True)
    with_fraction = _fractions_vary(agg)
    header = ["Task", "Backbone", "Freeze"] + (["Train %"] if with_fraction else []) + list(MAIN_METRICS)
    best = best_rows(agg)
    rows, bold = [], []
    for i, r in agg.iterrows():
        labels = [r["task"], r["backbone"], freeze_label(r["mode"], r["head"])]
        labels += [fmt_number(r["train_fraction"], 0, 100)] if with_fraction else []
        rows.append(labels + [ci_cell(r[m], r[f"{m}_low"], r[f"{m}_high"]) for m in MAIN_METRICS.values()])
        bold.append([False] + [bool(best[i])] * (len(header) - 1))
    caption = (f"Test-set results in % with 95% confidence intervals ({_interval_note(agg)}). Precision, recall and F1 "
               "are support-weighted. Best AUROC per task in bold.")
    columns = ["task", "backbone", "weights", "mode", "head", "train_fraction", "n_seeds", "ci"]
    metrics = [c for m in MAIN_METRICS.values() for c in (m, f"{m}_low", f"{m}_high")]
    raw = agg[columns + metrics].assign(best=best.to_numpy())
    return Table(header, rows, caption, raw, bold, _group_starts(agg["task"]), repeat_first=False)


def p_cell(p: float) -> str:
    """A p-value: three decimals, `<0.001` below that, a dash when not computed."""
    if not np.isfinite(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def pairwise_table(pairs: pd.DataFrame, alpha: float = 0.05) -> Table:
    """One row per compared pair: paired differences a − b with CIs, raw and Holm-adjusted p-values."""
    pairs = pairs.reset_index(drop=True)
    with_fraction = _fractions_vary(pairs) if len(pairs) else False
    header = ["Task"] + (["Train %"] if with_fraction else []) + [
        "Seed", "A", "B", "ΔAUROC", "ΔAccuracy", "DeLong p", "McNemar p", "DeLong p (Holm)", "McNemar p (Holm)"]
    rows, bold = [], []
    for _, r in pairs.iterrows():
        lead = [r["task"]] + ([fmt_number(r["train_fraction"], 0, 100)] if with_fraction else [])
        cells = [str(r["seed"]), r["a"], r["b"], ci_cell(r["auroc_diff"], r["auroc_low"], r["auroc_high"], True),
                 ci_cell(r["accuracy_diff"], r["accuracy_low"], r["accuracy_high"], True)]
        ps = [r["delong_p"], r["mcnemar_p"], r["delong_p_holm"], r["mcnemar_p_holm"]]
        rows.append(lead + cells + [p_cell(p) for p in ps])
        bold.append([False] * (len(lead) + len(cells) + 2) + [bool(p < alpha) for p in ps[2:]])
    caption = ("Paired comparisons A − B on the same test samples, in percentage points with 95% paired-bootstrap CIs "
               "(patients resampled whole when the data has groups). DeLong's test compares AUROCs (binary tasks only); "
               "McNemar's exact test compares correctness. Holm's correction runs over all pairs of a task; "
               f"adjusted p < {alpha} in bold. DeLong and McNemar assume independent samples.")
    return Table(header, rows, caption, pairs, bold, _group_starts(pairs["task"]) if len(pairs) else [])


def _seconds(r: pd.Series, key: str) -> str:
    text = fmt_number(r.get(key), 1)
    return f"{text} (cached)" if key == "extract_seconds" and text != DASH and r.get("cache_hit") in (True, 1) else text


def _params(n: float | None) -> str:
    return DASH if fmt_number(n) == DASH else f"{n / 1e6:.2f} M"


def cost_table(runs: pd.DataFrame) -> Table:
    """Per run: feature-extraction and training seconds, throughput, peak memory and parameter count."""
    runs = runs.reset_index(drop=True)
    header = ["Task", "Backbone", "Freeze", "Train %", "Seed", "Extract (s)", "Train (s)", "Images/s",
              "Peak memory (MB)", "Parameters"]
    rows = [[r["task"], r["backbone"], freeze_label(r["mode"], r["head"]), fmt_number(r["train_fraction"], 0, 100),
             str(r["seed"]), _seconds(r, "extract_seconds"), _seconds(r, "train_seconds"),
             fmt_number(r.get("images_per_second"), 1), fmt_number(r.get("peak_memory_mb"), 0),
             _params(r.get("n_params"))] for _, r in runs.iterrows()]
    caption = f"Cost per run ({DASH}: not recorded). Extraction is the frozen backbone's one forward pass over the data."
    columns = ["task", "backbone", "mode", "head", "train_fraction", "seed", "extract_seconds", "train_seconds",
               "images_per_second", "peak_memory_mb", "n_params", "cache_hit", "run_dir"]
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
