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


def test_main_table_layout_and_bold_best(report_dir: Path) -> None:
    tables = report_dir / "tables"
    rows = _md_rows(tables / "main_table.md")
    header = (tables / "main_table.md").read_text().splitlines()[0]
    assert [h.strip() for h in header.strip("|").split("|")] == [
        "Task", "Backbone", "Freeze", "Train %", "Accuracy", "Precision", "Recall", "F1", "AUROC"]
    raw = pd.read_csv(tables / "main_table.csv")
    assert len(rows) == len(raw) == 9
    for task, part in raw.groupby("task"):
        best = part["auroc"].idxmax()
        assert part["best"].tolist() == [i == best for i in part.index]
        bold = [r for r in rows if r[0] == task and r[-1].startswith("**")]
        assert len(bold) == 1
        assert bold[0][-1].strip("*").split(" ")[0] == f"{100 * part.loc[best, 'auroc']:.1f}"
    for row in rows:
        assert row[2].strip("*") in ("yes (linear)", "no")
        for cell in row[4:]:
            assert CELL.match(cell.strip("*")), cell


def test_main_csv_holds_raw_numbers(report_dir: Path) -> None:
    raw = pd.read_csv(report_dir / "tables" / "main_table.csv")
    for name in ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "auroc"):
        assert raw[name].dtype == float and raw[name].between(0, 1).all()
        assert (raw[f"{name}_low"] <= raw[name] + 1e-12).all() and (raw[name] <= raw[f"{name}_high"] + 1e-12).all()
    assert set(raw["n_seeds"]) == {1, 2}


def test_latex_is_escaped_booktabs(report_dir: Path) -> None:
    tex = (report_dir / "tables" / "main_table.tex").read_text()
    for token in (r"\begin{table}", r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule", r"\caption{",
                  r"\textbf{", r"binary\_lesion", r"dinov2\_vits14", r"in \%"):
        assert token in tex, token
    assert not re.search(r"(?<!\\)[_%&#]", tex.replace(" & ", " ")), "unescaped special character"
    assert tex.count(r"binary\_lesion") == 1  # the task is printed once, at the start of its block
    standalone = (report_dir / "tables" / "main_table_standalone.tex").read_text()
    assert standalone.startswith(r"\documentclass") and r"\usepackage{booktabs}" in standalone
    assert tex in standalone and standalone.rstrip().endswith(r"\end{document}")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not on PATH: cannot compile the LaTeX table")
def test_standalone_latex_compiles(report_dir: Path, tmp_path: Path) -> None:
    shutil.copy(report_dir / "tables" / "main_table_standalone.tex", tmp_path)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main_table_standalone.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "main_table_standalone.pdf").stat().st_size > 1000
    assert "Overfull" not in done.stdout  # the table fits the page


def test_pairwise_table(report_dir: Path) -> None:
    rows = _md_rows(report_dir / "tables" / "pairwise.md")
    raw = pd.read_csv(report_dir / "tables" / "pairwise.csv")
    assert len(rows) == len(raw) == 16
    assert {"a", "b", "auroc_diff", "delong_p_holm", "mcnemar_p_holm"} <= set(raw.columns)
    tex = (report_dir / "tables" / "pairwise.tex").read_text()
    assert r"$\Delta$AUROC" in tex and tex.count(r"\\") == 17  # header + 16 rows


def test_cost_table_shows_missing_fields_as_dash(report_dir: Path) -> None:
    rows = _md_rows(report_dir / "tables" / "cost.md")
    assert len(rows) == 17
    finetune = [r for r in rows if r[2] == "no"]
    assert finetune and all(r[5] == DASH for r in finetune)  # fine-tuning extracts no features
    frame = pd.DataFrame([{"task": "t", "backbone": "b", "mode": "frozen", "head": "linear", "train_fraction": 1.0,
                           "seed": 0, "extract_seconds": 12.34, "train_seconds": np.nan, "cache_hit": False,
                           "n_params": 21_500_000}])
    table = cost_table(frame)
    assert table.rows[0][5:] == ["12.3", DASH, DASH, DASH, "21.50 M"]
