"""HTML rendering of report tables: what fits a 1,400 px page."""

from __future__ import annotations

import pandas as pd

from medtransfer.report.render import HTML_INTERVALS, Table, column_parts, to_html


def test_a_table_too_wide_for_the_page_is_split_with_its_row_names_repeated():
    header = ["Task", "Backbone", "Mode", *(f"m{k}" for k in range(12))]
    rows = [["t", "resnet18", "fine-tuned", *("83.3 [77.5, 89.3]" for _ in range(12))]]
    parts = column_parts(header, rows)
    assert len(parts) == 2 and all(part[:3] == [0, 1, 2] for part in parts)
    assert sorted(j for part in parts for j in part[3:]) == list(range(3, 15))  # every column once
    assert all(len(part) - 3 <= HTML_INTERVALS for part in parts)
    narrow = [row[:3 + HTML_INTERVALS] for row in rows]
    assert column_parts(header[:3 + HTML_INTERVALS], narrow) == [list(range(3 + HTML_INTERVALS))]
    page = to_html(Table(header, rows, "caption", pd.DataFrame()))
    assert page.count("<table>") == 2 and page.count("<th>Backbone</th>") == 2 and page.count('<p class="caption">') == 1
