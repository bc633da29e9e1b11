"""Tables: paper layout with best AUROC in bold, LaTeX that compiles, raw CSV numbers, pairwise and cost tables."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtransfer.report.render import DASH, ci_cell, latex_escape
from medtransfer.report.tables import cost_table

CELL = re.compile(r"^-?\d+\.\d \[(-?\d+\.\d|–), (-?\d+\.\d|–)\]$")


def _md_rows(path: Path) -> list[list[str]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def test_cells_and_escaping_units() -> None:
    assert ci_cell(0.8766, 0.8012, 0.93) == "87.7 [80.1, 93.0]"
    assert ci_cell(float("nan"), float("nan"), float("nan")) == DASH
    assert ci_cell(0.031, -0.02, 0.081, sign=True) == "+3.1 [-2.0, +8.1]"
    assert latex_escape("dinov2_vits14 & 5% #1 {x} ~ ^ \\") == (
        r"dinov2\_vits14 \& 5\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{}")


def test_main_table_layout_and_bold_best_on_val(report_dir: Path) -> None:
    tables = report_dir / "tables"
    rows = _md_rows(tables / "main_table.md")
    header = (tables / "main_table.md").read_text().splitlines()[0]
    assert [h.strip() for h in header.strip("|").split("|")] == [
        "Task", "Backbone", "Mode", "Train %", "Folds", "Accuracy", "Precision", "Recall", "F1", "AUROC",
        "AUROC per fold", "95% CI over"]
    raw = pd.read_csv(tables / "main_table.csv")
    assert len(rows) == len(raw) == 11
    for task, part in raw.groupby("task"):
        best = part["val_auroc"].idxmax()  # chosen on val, never on test
        assert part["best"].tolist() == [i == best for i in part.index]
        bold = [r for r in rows if r[0] == task and r[9].startswith("**")]
        assert len(bold) == 1
        assert bold[0][9].strip("*").split(" ")[0] == f"{100 * part.loc[best, 'auroc']:.1f}"
    for row in rows:
        # The Mode cell completes the setup's one name, as the figures' legends show it.
        assert row[2].strip("*").split(",")[0] in ("frozen + linear", "fine-tuned")
        assert f"{row[1].strip('*')} / {row[2].strip('*')}" in set(raw["setup"])
        for cell in row[5:10]:
            assert CELL.match(cell.strip("*")), cell
        where = "over out-of-fold" if row[0] == "cv" else "over test"  # the fixture's one cross-validated task
        assert row[-1].startswith("95% CI, ") and where in row[-1], row
    caption = (tables / "main_table.md").read_text()
    assert "chosen on val" in caption and "out-of-fold" in caption
    cv = [r for r in rows if r[0] == "cv"]
    assert len(cv) == 1 and cv[0][4].strip("*") == "3" and len(cv[0][10].strip("*").split(", ")) == 3


def test_main_csv_holds_raw_numbers(report_dir: Path) -> None:
    raw = pd.read_csv(report_dir / "tables" / "main_table.csv")
    for name in ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "auroc"):
        assert raw[name].dtype == float and raw[name].between(0, 1).all()
        assert (raw[f"{name}_low"] <= raw[name] + 1e-12).all() and (raw[name] <= raw[f"{name}_high"] + 1e-12).all()
    assert set(raw["n_seeds"]) == {1, 2}
    assert (raw["auroc_high"] > raw["auroc_low"]).all()  # never zero-width on a finite test set


def test_latex_is_escaped_booktabs(report_dir: Path) -> None:
    tex = (report_dir / "tables" / "main_table.tex").read_text()
    for token in (r"\begin{table}", r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule", r"\caption{",
                  r"\textbf{", r"binary\_lesion", r"dinov2\_vits14", r"in \%"):
        assert token in tex, token
    # `{%` ending a line is LaTeX's own comment (no stray space before the tabular), not a cell's percent sign.
    assert not re.search(r"(?<!\\)[_%&#]", tex.replace(" & ", " ").replace("{%\n", "{\n")), "unescaped character"
    assert tex.count(r"binary\_lesion") == 1  # the task is printed once, at the start of its block
    standalone = (report_dir / "tables" / "main_table_standalone.tex").read_text()
    assert standalone.startswith(r"\documentclass") and r"\usepackage{booktabs}" in standalone
    assert tex in standalone and standalone.rstrip().endswith(r"\end{document}")


NEEDS_PDFLATEX = pytest.mark.skipif(shutil.which("pdflatex") is None,
                                    reason="pdflatex is not on PATH: cannot compile the LaTeX table")


def pdflatex(report_dir: Path, tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    """Compile one of the report's standalone .tex files in tmp_path; it must succeed."""
    shutil.copy(report_dir / "tables" / name, tmp_path)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    return done


@NEEDS_PDFLATEX
def test_standalone_latex_compiles(report_dir: Path, tmp_path: Path) -> None:
    done = pdflatex(report_dir, tmp_path, "main_table_standalone.tex")
    assert (tmp_path / "main_table_standalone.pdf").stat().st_size > 1000
    assert "Overfull" not in done.stdout  # the table fits the page


def test_pairwise_table(report_dir: Path) -> None:
    rows = _md_rows(report_dir / "tables" / "pairwise.md")
    raw = pd.read_csv(report_dir / "tables" / "pairwise.csv")
    assert len(rows) == len(raw) == 10  # binary_lesion 4, three-class 6 (its lr pair included), cv none
    assert {"a", "b", "auroc_diff", "auroc_p_holm", "accuracy_p_holm", "auroc_test"} <= set(raw.columns)
    tex = (report_dir / "tables" / "pairwise.tex").read_text()
    assert r"$\Delta$AUROC" in tex and tex.count(r"\\") == 11  # header + 10 rows


def test_secondary_tables(report_dir: Path) -> None:
    tables = report_dir / "tables"
    patients = pd.read_csv(tables / "patient_table.csv")
    assert set(patients["task"]) == {"binary_lesion", "cv"}
    more = pd.read_csv(tables / "more_metrics.csv")
    binary = more[more["task"] == "binary_lesion"]
    assert binary["sensitivity"].notna().all() and more.loc[more["task"] == "three-class", "sensitivity"].isna().all()
    per_class = pd.read_csv(tables / "per_class.csv")
    assert set(per_class.loc[per_class["task"] == "three-class", "class"].astype(str)) == {"class0", "class1", "class2"}


def test_cost_table_shows_missing_fields_as_dash(report_dir: Path) -> None:
    rows = _md_rows(report_dir / "tables" / "cost.md")
    assert len(rows) == 24
    finetune = [r for r in rows if r[2] == "fine-tuned"]
    assert finetune and all(r[6] == DASH for r in finetune)  # fine-tuning extracts no features
    cv = [r for r in rows if r[0] == "cv"]  # 3 folds x 2 seeds, each row its own fold
    assert sorted((r[4], r[5]) for r in cv) == [(s, f) for s in "01" for f in "012"] and "3-fold CV" in cv[0][2]
    frame = pd.DataFrame([{"task": "t", "backbone": "b", "mode": "frozen", "head": "linear", "train_fraction": 1.0,
                           "seed": 0, "extract_seconds": 12.34, "train_seconds": np.nan, "cache_hit": False,
                           "n_params": 21_500_000}])
    table = cost_table(frame)
    assert table.rows[0][2] == "frozen + linear"  # named as the report names the mode, without a setup column
    assert table.rows[0][5:] == [DASH, "12.3", DASH, DASH, DASH, "21.50 M"]


def test_compact_table_fits_a_column(report_dir: Path) -> None:
    tex = (report_dir / "tables" / "main_compact.tex").read_text()
    assert r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}" in tex  # shrinks, never enlarges
    header = next(line for line in tex.splitlines() if line.startswith("Task &"))
    assert header.count("&") == 5  # Task, Backbone, Mode, Accuracy, F1, AUROC
    assert "FZ-lin: frozen backbone, linear head" in tex and "FT: fine-tuned" in tex and "FZ-mlp" not in tex
    assert tex.count(r"\textbf{") == 3 * 3  # the best-on-val setup of each of the three tasks, three metrics
    assert "binary" not in tex.split(r"\midrule", 1)[0]  # no body row above the header rule
    standalone = (report_dir / "tables" / "main_compact_standalone.tex").read_text()
    assert r"\documentclass[twocolumn]{article}" in standalone and tex in standalone


@NEEDS_PDFLATEX
def test_compact_latex_compiles_within_one_column(report_dir: Path, tmp_path: Path) -> None:
    done = pdflatex(report_dir, tmp_path, "main_compact_standalone.tex")
    assert "Overfull" not in done.stdout  # the table fits the column
