"""Progress bars (rich) on a terminal; silent when piped or with --quiet."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def make_console(stderr: bool = False) -> Console:
    """A rich console; piped output has no width, so 110 columns keep table rows on one line."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 110)


class Reporter:
    """Status lines and progress bars on stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.console = make_console(stderr=True)
        self.quiet = quiet
        self.bars = not quiet and sys.stderr.isatty()

    def log(self, message: str) -> None:
        """A status line, unless quiet."""
        if not self.quiet:
            self.console.print(message, highlight=False, markup=False)  # paths may hold [brackets]

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A bar for `total` units; yields `advance(n)`."""
        if not self.bars:
            yield lambda n=1: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=True) as bar:
            task_id = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task_id, n)
