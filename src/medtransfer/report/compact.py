"""main_compact.tex: the main table cut down to fit one column of a two-column paper.

Fewer columns (accuracy, F1, AUROC), modes abbreviated with a legend in the caption, each interval on a second line in
a smaller font, and the whole shrunk to the column only when it is still wider (never enlarged)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medtransfer.evaluation.metric_registry import METRIC_REGISTRY
from medtransfer.report.collect import mode_label
from medtransfer.report.render import DASH, FIT_LINE, fmt_number, latex_escape
from medtransfer.report.tables import best_rows, selection_metric

METRICS = ("accuracy", "f1_weighted", "auroc")
MODES = {"fine-tuned": "FT", "frozen + linear": "FZ-lin", "frozen + mlp": "FZ-mlp", "frozen + knn": "FZ-kNN"}
LEGEND = {"FT": "fine-tuned", "FZ-lin": "frozen backbone, linear head", "FZ-mlp": "frozen backbone, MLP head",
          "FZ-kNN": "frozen backbone, kNN probe"}


def _mode(row: pd.Series) -> str:
    head = row.get("head")
    label = mode_label(row["mode"], head if isinstance(head, str) else None)
    name = row.get("mode_name") or label
    return MODES.get(label, label) + name.removeprefix(label)


def _cell(row: pd.Series, metric: str, bold: bool) -> str:
    """`value` over `[low, high]` (smaller), in percent, as a one-column stack."""
    scale = 100 if METRIC_REGISTRY.get(metric).percent else 1
    digits = 1 if scale == 100 else 3
    value = fmt_number(row[metric], digits, scale)
    if value == DASH:
        return "--"
    value = rf"\textbf{{{value}}}" if bold else value
    low, high = (fmt_number(row[f"{metric}_{end}"], digits, scale) for end in ("low", "high"))
    interval = f"[{low}, {high}]"
    return rf"\begin{{tabular}}[t]{{@{{}}c@{{}}}}{value}\\[-1pt]{{\scriptsize {latex_escape(interval)}}}\end{{tabular}}"


def _rows(agg: pd.DataFrame, metrics: list[str]) -> list[str]:
    best = best_rows(agg, selection_metric(agg))
    lines, task = [], None
    for i, row in agg.iterrows():
        if task is not None and row["task"] != task:
            lines.append(r"\midrule")
        cells = [latex_escape(row["task"]) if row["task"] != task else "", latex_escape(row["backbone"]),
                 latex_escape(_mode(row))] + [_cell(row, m, bool(best[i])) for m in metrics]
        lines.append(" & ".join(cells) + r" \\")
        task = row["task"]
    return lines


def compact_table(agg: pd.DataFrame, label: str = "tab:main-compact") -> str:
    """The compact main table as a LaTeX `table` (needs booktabs and graphicx)."""
    agg = agg[agg["train_fraction"] == agg.groupby("task")["train_fraction"].transform("max")].reset_index(drop=True)
    metrics = [m for m in METRICS if m in agg]
    used = sorted({MODES.get(mode_label(r["mode"], r["head"] if isinstance(r["head"], str) else None))
                   for _, r in agg.iterrows()} - {None})
    legend = "; ".join(f"{k}: {LEGEND[k]}" for k in used)
    caption = (f"Test results in % with 95% CIs below each value ({'; '.join(sorted(set(agg['ci'])))}). "
               f"{legend}. F1: support-weighted. Bold: best on validation. Largest training fraction only; every setup "
               "and metric: main_table.tex.")
    header = ["Task", "Backbone", "Mode"] + [METRIC_REGISTRY.get(m).column for m in metrics]
    lines = [r"\begin{table}[htbp]", r"\centering", r"\small", r"\setlength{\tabcolsep}{3pt}",
             rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{{label}}}", FIT_LINE, r"\begin{tabular}{lll" + "c" * len(metrics) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule", *_rows(agg, metrics),
             r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def compact_document(body: str) -> str:
    """A two-column article around the compact table: it compiles only as it would in a paper's column."""
    return ("\\documentclass[twocolumn]{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
            "\\usepackage{graphicx}\n\\begin{document}\n" + body + "\\end{document}\n")


def write_compact(agg: pd.DataFrame, folder: Path) -> list[Path]:
    """main_compact.tex (the table) and main_compact_standalone.tex (a two-column document holding it)."""
    body = compact_table(agg)
    paths = [folder / "main_compact.tex", folder / "main_compact_standalone.tex"]
    paths[0].write_text(body)
    paths[1].write_text(compact_document(body))
    return paths
