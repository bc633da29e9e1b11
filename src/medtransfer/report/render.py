"""One table, three renderings: Markdown, LaTeX (booktabs) and HTML, each with per-cell bold."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from medtransfer.evaluation.metric_registry import METRIC_REGISTRY

if TYPE_CHECKING:
    from medtransfer.rundir.metrics import Interval

DASH = "–"  # shown for a missing or undefined number
# One pass over the characters, so an escape's own backslash and braces are never escaped again.
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "<": r"\textless{}", ">": r"\textgreater{}", "Δ": r"$\Delta$", DASH: "--"}


@dataclass
class Table:
    """Formatted cells with a bold mask, a caption, and the raw numbers behind them (written as CSV)."""

    header: list[str]
    rows: list[list[str]]
    caption: str
    raw: pd.DataFrame
    bold: list[list[bool]] = field(default_factory=list)
    group_starts: list[int] = field(default_factory=list)  # rows that open a new block (a rule above in LaTeX)
    repeat_first: bool = True  # LaTeX prints a block's first-column value once, at its start, when False

    def is_bold(self, i: int, j: int) -> bool:
        """Whether cell (row i, column j) is emphasised."""
        return bool(self.bold) and self.bold[i][j]


def fmt_number(value: float | None, digits: int = 1, scale: float = 1.0, sign: bool = False) -> str:
    """A number with fixed digits, or a dash when missing or not finite."""
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return DASH
    return f"{value * scale:{'+' if sign else ''}.{digits}f}"


def ci_cell(value: float, low: float, high: float, sign: bool = False, percent: bool = True) -> str:
    """`value [low, high]` in percent with one decimal, or as plain numbers with three (a dash when undefined)."""
    if fmt_number(value) == DASH:
        return DASH
    digits, scale = (1, 100) if percent else (3, 1)
    return (f"{fmt_number(value, digits, scale, sign)} [{fmt_number(low, digits, scale, sign)}, "
            f"{fmt_number(high, digits, scale, sign)}]")


def metric_cell(name: str, interval: Interval) -> str:
    """A metrics.json interval as the paper's cell, in percent or plain as the metric registry declares the metric."""
    # Undeclared names (per-class recall_c{k}) are shares.
    percent = METRIC_REGISTRY.get(name).percent if name in METRIC_REGISTRY else True
    return ci_cell(interval.value, interval.low, interval.high, percent=percent)


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular cell."""
    return "".join(LATEX_SPECIAL.get(char, char) for char in text)


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with `**bold**` cells and the caption below it."""
    def cell(i: int, j: int, text: str) -> str:
        text = text.replace("|", r"\|")
        return f"**{text}**" if table.is_bold(i, j) and text else text

    lines = ["| " + " | ".join(table.header) + " |", "|" + "|".join("---" for _ in table.header) + "|"]
    lines += ["| " + " | ".join(cell(i, j, t) for j, t in enumerate(row)) + " |" for i, row in enumerate(table.rows)]
    return "\n".join(lines) + f"\n\n{table.caption}\n"


def to_latex(table: Table, label: str) -> str:
    """A booktabs tabular inside a table environment (needs `\\usepackage{booktabs}`)."""
    def cell(i: int, j: int, text: str) -> str:
        if j == 0 and not table.repeat_first and i not in table.group_starts and i > 0:
            return ""
        text = latex_escape(text)
        return rf"\textbf{{{text}}}" if table.is_bold(i, j) and text else text

    lines = [r"\begin{table}[htbp]", r"\centering", r"\small", r"\setlength{\tabcolsep}{4pt}",
             rf"\caption{{{latex_escape(table.caption)}}}", rf"\label{{{label}}}",
             r"\begin{tabular}{" + "l" * len(table.header) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    for i, row in enumerate(table.rows):
        if i in table.group_starts and i > 0:
            lines.append(r"\midrule")
        lines.append(" & ".join(cell(i, j, t) for j, t in enumerate(row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def latex_document(body: str) -> str:
    """A minimal compilable document around table code (landscape, since the CI cells are wide)."""
    return ("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
            "\\usepackage[landscape,margin=1.5cm]{geometry}\n\\begin{document}\n" + body + "\\end{document}\n")


def to_html(table: Table) -> str:
    """An HTML table (escaped text, `<strong>` for bold) that scrolls sideways, with its caption wrapped below."""
    def cell(i: int, j: int, text: str) -> str:
        text = html.escape(text)
        return f"<td><strong>{text}</strong></td>" if table.is_bold(i, j) and text else f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(cell(i, j, t) for j, t in enumerate(row)) + "</tr>\n"
                   for i, row in enumerate(table.rows))
    # The caption sits outside the scrolling box: a <caption> is as wide as its table and would scroll off screen.
    return (f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table></div>\n'
            f'<p class="caption">{html.escape(table.caption)}</p>\n')
