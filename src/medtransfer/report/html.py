"""report.html: one self-contained page (inline CSS, figures as base64 data URIs) that reads offline."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path

import pandas as pd

from medtransfer.report.figures import FigureEntry
from medtransfer.report.render import Table, to_html

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 0.8rem 0 1.4rem; font-size: 0.88rem; }
.scroll > table { margin-bottom: 0.2rem; }
.caption { color: #555; font-size: 0.82rem; margin: 0.2rem 0 1.4rem; }
th, td { padding: 0.28rem 0.6rem; border-bottom: 1px solid #e3e3e3; text-align: left; white-space: nowrap; }
thead th { border-bottom: 2px solid #555; } tbody tr:hover { background: #f6f8fa; }
.scroll { overflow-x: auto; }
figure { margin: 1rem 0 1.6rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85rem; }
.meta { color: #666; } .warn { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.6rem 1rem; }
.ok { background: #eef8ee; border-left: 4px solid #4a4; padding: 0.6rem 1rem; }
"""


@dataclass
class ReportParts:
    """Everything the page shows."""

    runs_dir: Path
    n_runs: int
    tasks: list[str]
    tables: dict[str, Table]  # section title -> table
    figures: list[FigureEntry]
    skipped: pd.DataFrame


def data_uri(png: Path) -> str:
    """A PNG file as a `data:image/png;base64,…` URI."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


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
        parts += [f'<figure><img src="{data_uri(f.path)}" alt="{escape(f.title)}: {escape(task)}">'
                  f"<figcaption>{escape(f.title)} ({escape(f.path.name)})</figcaption></figure>"
                  for f in figures if f.task == task]
    return "\n".join(parts)


def render_html(parts: ReportParts) -> str:
    """The whole page as one string."""
    stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    sections = [("Runs not included", _skipped_section(parts.skipped))]
    sections += [(title, to_html(table)) for title, table in parts.tables.items()]
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
