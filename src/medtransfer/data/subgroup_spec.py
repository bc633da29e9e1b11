"""The `subgroups` option: metadata columns to split the test metrics by, categories or numeric bins.

Plain Python only: the configuration and the data layer read it, and neither should load the statistics stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SubgroupColumn:
    """A metadata column to split by: its categories, or numeric bins between ascending edges."""

    column: str
    edges: tuple[float, ...] | None = None

    @property
    def text(self) -> str:
        """The column as the `subgroups` option writes it: 'sex' or 'age:0,50,120'."""
        return self.column if self.edges is None else f"{self.column}:{','.join(map(edge_text, self.edges))}"


def edge_text(value: float) -> str:
    """A bin edge as labels write it: 50, not 50.0."""
    value = float(value)  # repr of a numpy float would show np.float64(...)
    return str(int(value)) if math.isfinite(value) and value.is_integer() else repr(value)


def as_number(token: str) -> float | None:
    """The token as a number, None when it is not one (NaN included)."""
    try:
        value = float(token)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _parse_text(text: str) -> list[tuple[str, list[str]]]:
    """(column, edge tokens) per column of 'sex,age:0,50,120': a number after COL:... continues its bins."""
    out: list[tuple[str, list[str]]] = []
    for token in (t.strip() for t in text.split(",")):
        if out and out[-1][1] and as_number(token) is not None:
            out[-1][1].append(token)
            continue
        if out and len(out[-1][1]) == 1 and as_number(out[-1][1][0]) is not None:  # 'age:0,x': one edge, then x
            name, edges = out[-1]
            raise ValueError(f"subgroups {text!r}: {name}: need at least 2 bin edges before the next column, got "
                             f"{edges[0]!r} then {token!r} (write COL:E0,E1,... with numbers)")
        name, colon, first = (part.strip() for part in token.partition(":"))
        if not name:
            raise ValueError(f"subgroups {text!r}: empty column name (write COL or COL:E0,E1,...)")
        if colon and not first:
            raise ValueError(f"subgroups {text!r}: {name}: no bin edges after ':'")
        out.append((name, [first] if colon else []))
    return out


def _column(text: str, name: str, tokens: list[str]) -> SubgroupColumn:
    if not tokens:
        return SubgroupColumn(name)
    edges = [as_number(t) for t in tokens]
    if any(e is None for e in edges):
        raise ValueError(f"subgroups {text!r}: {name}: bin edges must be numbers, got {tokens}")
    if len(edges) < 2:
        raise ValueError(f"subgroups {text!r}: {name}: need at least 2 bin edges, got {tokens}")
    if any(a >= b for a, b in zip(edges, edges[1:])):
        raise ValueError(f"subgroups {text!r}: {name}: bin edges must ascend strictly, got {tokens}")
    return SubgroupColumn(name, tuple(edges))


def parse_subgroups(value: str | list[str] | None) -> list[SubgroupColumn] | None:
    """The `subgroups` option ('sex,age:0,50,120' or ['sex', 'age:0,50,120']) as columns; None when not given."""
    if value is None or (isinstance(value, list) and not value):
        return None
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise ValueError(f"subgroups: need a string or a list of strings, got {value!r}")
    columns = [_column(text, name, tokens) for text in texts for name, tokens in _parse_text(text)]
    seen = [c.column for c in columns]
    twice = sorted({name for name in seen if seen.count(name) > 1})
    if twice:
        raise ValueError(f"subgroups: column(s) {twice} named more than once")
    return columns
