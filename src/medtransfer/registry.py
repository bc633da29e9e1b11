"""A small name-keyed registry: duplicates rejected, unknown names answered with the nearest known ones."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from medtransfer.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind (metrics, sources, heads, ...) keyed by name, kept in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, value: T) -> T:
        """Add `value` under `name` and return it; a second entry under the same name is a programming error."""
        if name in self._entries:
            # Two modules claiming one name would make lookups depend on import order: refuse loudly.
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = value
        return value

    def get(self, name: str) -> T:
        """The entry under `name`; an unknown name is a UserError naming the nearest known names."""
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(f"{self.kind} {name!r}", "unknown", self._hint(name)) from None

    def _hint(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3)
        if close:
            return "did you mean " + " or ".join(repr(c) for c in close) + "?"
        return "known: " + ", ".join(self._entries) if self._entries else f"no {self.kind} is registered"

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._entries)

    def items(self) -> tuple[tuple[str, T], ...]:
        """(name, entry) pairs, in registration order."""
        return tuple(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
