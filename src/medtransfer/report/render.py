"""One table, three renderings: Markdown, LaTeX (booktabs) and HTML, each with per-cell bold."""

from __future__ import annotations

import html
import math
import re
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

# A cell that is a number, a p-value or an interval (`87.7 [80.1, 93.0]`, `<0.001`, `12.3 (cached)`, `2 vs 2`).
NUMERIC = re.compile(r"^[<+\-–]?\d[\d.]*( M| \[[^\]]*\]| \(cached\)| vs \d+)?$")

LONG = 40  # characters: a cell this long is a description, given a few words a line rather than one


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
    latex_widths: dict[str, str] = field(default_factory=dict)  # header -> width of a LaTeX column that wraps
    # A column of a few long texts repeated down the rows: in HTML a short key per row, the texts under the table.
    html_key: str | None = None

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


# Inside \resizebox, \width is the table's natural width: shrink it to the line when wider, never enlarge it.
FIT_LINE = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"


def to_latex(table: Table, label: str) -> str:
    """A booktabs tabular inside a table environment, shrunk to the line when wider (needs booktabs and graphicx)."""
    def cell(i: int, j: int, text: str) -> str:
        if j == 0 and not table.repeat_first and i not in table.group_starts and i > 0:
            return ""
        text = latex_escape(text)
        return rf"\textbf{{{text}}}" if table.is_bold(i, j) and text else text

    lines = [r"\begin{table}[htbp]", r"\centering", r"\small", r"\setlength{\tabcolsep}{4pt}",
             rf"\caption{{{latex_escape(table.caption)}}}", rf"\label{{{label}}}",
             FIT_LINE, r"\begin{tabular}{" + "".join(_spec(table, h) for h in table.header) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    for i, row in enumerate(table.rows):
        if i in table.group_starts and i > 0:
            lines.append(r"\midrule")
        lines.append(" & ".join(cell(i, j, t) for j, t in enumerate(row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _spec(table: Table, header: str) -> str:
    width = table.latex_widths.get(header)
    return f"p{{{width}}}" if width else "l"


def latex_document(body: str) -> str:
    """A minimal compilable document around table code (landscape, since the CI cells are wide)."""
    return ("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
            "\\usepackage[landscape,margin=1.5cm]{geometry}\n\\begin{document}\n" + body + "\\end{document}\n")


def _keyed(table: Table) -> tuple[list[list[str]], str]:
    """The rows with the `html_key` column's long texts replaced by short keys (a, b, …), and the key's legend."""
    if table.html_key not in table.header:
        return table.rows, ""
    j = table.header.index(table.html_key)
    keys = {text: chr(ord("a") + k) for k, text in enumerate(dict.fromkeys(row[j] for row in table.rows))}
    rows = [row[:j] + [keys[row[j]]] + row[j + 1:] for row in table.rows]
    return rows, f"{table.html_key}: " + "; ".join(f"({key}) {text}" for text, key in keys.items()) + ". "


HTML_INTERVALS = 8  # interval columns (`value [low, high]`) that fit a 1,400 px page beside the row names


def column_parts(header: list[str], rows: list[list[str]]) -> list[list[int]]:
    """The column indices of each HTML part: all of them, or for a table of more interval columns than fit the page,
    the leading name columns (no cell a number) followed by an even share of the rest."""
    intervals = sum(any(" [" in row[j] and NUMERIC.match(row[j]) for row in rows) for j in range(len(header)))
    if intervals <= HTML_INTERVALS:
        return [list(range(len(header)))]
    names = 0
    while names < len(header) - 1 and not any(NUMERIC.match(row[names]) for row in rows):
        names += 1
    rest = list(range(names, len(header)))
    share = math.ceil(len(rest) / math.ceil(intervals / HTML_INTERVALS))
    return [list(range(names)) + rest[k:k + share] for k in range(0, len(rest), share)]


def to_html(table: Table) -> str:
    """An HTML table (escaped text, `<strong>` for bold), its text cells free to wrap, with its caption below."""
    def cell(i: int, j: int, text: str) -> str:
        # Numbers and intervals keep to one line (class n); names and captions wrap to fit the page.
        numeric = NUMERIC.match(text)
        kind = ' class="n"' if numeric else ' class="long"' if len(text) > LONG else ""
        text = html.escape(text)
        if numeric and " [" in text:  # a wide table may break between the value and its interval, nowhere else
            value, interval = text.split(" [", 1)
            text = f"{value} <span>[{interval}</span>"
        return f"<td{kind}><strong>{text}</strong></td>" if table.is_bold(i, j) and text else f"<td{kind}>{text}</td>"

    rows, legend = _keyed(table)
    parts = []
    for columns in column_parts(table.header, rows):
        head = "".join(f"<th>{html.escape(table.header[j])}</th>" for j in columns)
        body = "".join("<tr>" + "".join(cell(i, j, row[j]) for j in columns) + "</tr>\n" for i, row in enumerate(rows))
        parts.append(f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>'
                     '</div>\n')
    # The caption sits outside the scrolling box: a <caption> is as wide as its table and would scroll off screen.
    return ("".join(parts)
            + f'<p class="caption">{html.escape(legend + table.caption)}</p>\n')
