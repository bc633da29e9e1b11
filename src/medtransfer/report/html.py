"""report.html: one self-contained page (inline CSS, figures as base64 data URIs) that reads offline."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path

import pandas as pd
from PIL import Image

from medtransfer.report.figures import FigureEntry
from medtransfer.report.style import DPI
from medtransfer.report.render import Table, to_html

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1280px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 0.8rem 0 1.4rem; font-size: 0.84rem; }
.scroll > table { margin-bottom: 0.2rem; }
.caption { color: #555; font-size: 0.82rem; margin: 0.2rem 0 1.4rem; }
th, td { padding: 0.28rem 0.5rem; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }
/* Text cells wrap at spaces (a word longer than the cell anywhere) so a table fits the page and never scrolls;
   a number never breaks, and an interval only between its value and its brackets. */
td { overflow-wrap: break-word; } td.n span, td:first-child { white-space: nowrap; }
td.long { min-width: 9em; }  /* a description (tests, command): a few lines, not a column of single words */
details > summary { cursor: pointer; color: #345; margin: 0.4rem 0; }
thead th { border-bottom: 2px solid #555; } tbody tr:hover { background: #f6f8fa; }
.scroll { overflow-x: auto; }
figure { margin: 1rem 0 1.6rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85rem; }
.meta { color: #666; } .warn { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.6rem 1rem; }
.ok { background: #eef8ee; border-left: 4px solid #4a4; padding: 0.6rem 1rem; }
"""
FOLD_ROWS = 8  # a collapsible table longer than this starts folded
SCREEN_DPI = 100  # figures on screen at the size of a 100 dpi rendering, each font as legible as the tables'


@dataclass
class ReportParts:
    """Everything the page shows."""

    runs_dir: Path
    n_runs: int
    tasks: list[str]
    tables: dict[str, Table]  # section title -> table
    figures: list[FigureEntry]
    skipped: pd.DataFrame
    collapsed: set[str] = field(default_factory=set)  # section titles whose long tables fold away


EMBED_SCALE = 0.5  # the page shows figures at 100 dpi: 150 dpi stays sharp on high-density screens at a quarter of
# the bytes of the 300 dpi files, which stay beside the report for print


def data_uri(png: Path) -> str:
    """A PNG figure at half its resolution as a `data:image/png;base64,…` URI."""
    with Image.open(png) as image:
        size = (max(1, round(image.width * EMBED_SCALE)), max(1, round(image.height * EMBED_SCALE)))
        smaller = image.convert("RGBA").resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    smaller.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _skipped_section(skipped: pd.DataFrame) -> str:
    if not len(skipped):
        return '<p class="ok">Every run folder found was finished and is included.</p>'
    rows = "".join(f"<tr><td>{escape(str(r['run_dir']))}</td><td>{escape(str(r['reason']))}</td>"
                   f"<td>{escape(' / '.join(str(r[k]) for k in ('task', 'backbone', 'mode', 'seed') if pd.notna(r[k])))}"
                   "</td></tr>" for _, r in skipped.iterrows())
    return (f'<div class="warn"><p><strong>{len(skipped)} run folder(s) are not in the tables or figures.</strong> '
            "Incomplete runs are redone by <code>medtransfer run STUDY.yaml --resume</code>.</p>"
            '<div class="scroll"><table><thead><tr><th>run folder</th><th>reason</th><th>task / backbone / mode / '
            f"seed</th></tr></thead><tbody>{rows}</tbody></table></div></div>")


def _figures_section(figures: list[FigureEntry], tasks: list[str]) -> str:
    parts = []
    for task in tasks:
        parts.append(f"<h3>{escape(task)}</h3>")
        parts += [_figure(f) for f in figures if f.task == task]
    return "\n".join(parts)


def _figure(f: FigureEntry) -> str:
    """The PNG inline, and both files named in the caption (links work beside the report's figures/ folder)."""
    files = (f'<a href="figures/{escape(f.pdf.name)}">{escape(f.pdf.name)}</a> (vector) · '
             f'<a href="figures/{escape(f.path.name)}">{escape(f.path.name)}</a> (300 dpi)')
    note = f" {escape(f.note)}" if f.note else ""
    return (f'<figure><img src="{data_uri(f.path)}" width="{_display_width(f.path)}" '
            f'alt="{escape(f.title)}: {escape(f.task)}">'
            f"<figcaption>{escape(f.title)}.{note} Files: {files}</figcaption></figure>")


def _display_width(png: Path) -> int:
    """The width in CSS pixels of the figure at 100 dpi: a 300 dpi PNG shown at its pixel size would be 3× too big."""
    with Image.open(png) as image:
        return round(image.width * SCREEN_DPI / DPI)


def _table_section(table: Table, collapsed: bool) -> str:
    """A table; a long one in a collapsed section (opened with a click) when it is reference material."""
    if not collapsed or len(table.rows) <= FOLD_ROWS:
        return to_html(table)
    return f"<details><summary>{len(table.rows)} rows: show</summary>\n{to_html(table)}</details>"


def render_html(parts: ReportParts) -> str:
    """The whole page as one string."""
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    sections = [("Runs not included", _skipped_section(parts.skipped))]
    sections += [(title, _table_section(table, title in parts.collapsed)) for title, table in parts.tables.items()]
    sections.append(("Figures", _figures_section(parts.figures, parts.tasks)))
    nav = " · ".join(f'<a href="#s{k}">{escape(title)}</a>' for k, (title, _) in enumerate(sections))
    body = "\n".join(f'<section id="s{k}"><h2>{escape(title)}</h2>\n{content}</section>'
                     for k, (title, content) in enumerate(sections))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>medtransfer report</title>'
            f"<style>{CSS}</style></head><body>\n<h1>medtransfer report</h1>\n"
            f'<p class="meta">{escape(str(parts.runs_dir))} · {parts.n_runs} finished run(s) · '
            f"{len(parts.tasks)} task(s): {escape(', '.join(parts.tasks))} · built {escape(stamp)}</p>\n"
            f"<nav>{nav}</nav>\n{body}\n</body></html>\n")


def write_html(parts: ReportParts, path: Path) -> Path:
    """Write report.html."""
    path.write_text(render_html(parts), encoding="utf-8")
    return path
