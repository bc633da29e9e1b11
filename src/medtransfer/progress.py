"""What a command prints: results on stdout; status lines, epoch lines and progress on stderr (rich bars on a
terminal, plain periodic lines when piped); and a plain-text copy of the results and status lines for a run's
train.log."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

PLAIN_EVERY_S = 10.0  # piped, CI or a log file: one progress line at most this often
EPOCH_LINES = 10  # a head training of many epochs shows about this many epoch lines (listeners get every row)
RECORD_WIDTH = 110  # train.log's width: tables wider than this would wrap in an editor anyway


def clock() -> float:
    """Seconds for progress rates and intervals (a module function, so tests can give it a fake time)."""
    return time.perf_counter()


def make_console(stderr: bool = False) -> Console:
    """A rich console; piped output has no width, so 110 columns keep table rows on one line."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else RECORD_WIDTH)


def record_console(file: Any) -> Console:
    """A console writing plain text into an open file: no colours, no cursor or other control codes."""
    return Console(file=file, width=RECORD_WIDTH, color_system=None, force_terminal=False, no_color=True,
                   highlight=False, emoji=False)


@dataclass
class TaskProgress:
    """`advance(n)` of one task: a rich bar on a terminal, else a plain line at most every PLAIN_EVERY_S seconds."""

    description: str
    total: int
    unit: str  # what one step counts ("images", "batches"), or "" for a plain count
    size: int  # images per step; above 1 the rate is given in img/s
    write: Callable[[str], None] | None  # where plain lines go; None: silent (quiet, or a bar draws instead)
    bar: tuple[Progress, TaskID] | None = None
    done: int = 0
    printed: int | None = None  # `done` at the last plain line: a task that showed lines also says where it ended
    started: float = field(default_factory=lambda: clock())  # a lambda: `clock` is looked up at each call
    shown: float = field(default_factory=lambda: clock())

    def __call__(self, n: int = 1) -> None:
        """`n` more steps done."""
        self.done += n
        if self.bar is not None:
            self.bar[0].advance(self.bar[1], n)
        elif self.write is not None and clock() - self.shown >= PLAIN_EVERY_S:
            self.write(self.line())
            self.shown, self.printed = clock(), self.done

    def restart(self, description: str) -> None:
        """The same task from zero under a new name: the next epoch of a fine-tune."""
        self.description, self.done, self.started = description, 0, clock()
        if self.bar is not None:
            self.bar[0].reset(self.bar[1], description=description)

    def line(self) -> str:
        """e.g. 'fine-tune epoch 2/6: 40/120 batches (33%), 12.3 img/s'."""
        rate = self.done * self.size / max(clock() - self.started, 1e-9)
        share = self.done / self.total if self.total else 1.0
        unit = f" {self.unit}" if self.unit else ""
        rate_unit = " img" if self.size > 1 else unit
        return f"{self.description}: {self.done}/{self.total}{unit} ({share:.0%}), {rate:.1f}{rate_unit}/s"


class Reporter:
    """Results on stdout, everything else on stderr; both, bars aside, into every open run log (`record`)."""

    def __init__(self, quiet: bool = False) -> None:
        self.console = make_console(stderr=True)  # status, warnings, epoch lines, progress
        self.out = make_console()  # results: what `medtransfer demo > out.txt` keeps
        self.quiet = quiet
        self.bars = not quiet and sys.stderr.isatty()
        self._listeners: list[Callable[[dict], None]] = []
        self._records: list[Console] = []

    def log(self, message: str) -> None:
        """A status line on stderr (unless quiet) and in the run log."""
        if not self.quiet:
            # Markup off: paths may hold [brackets]; soft wrap: a long line stays one line in a piped log.
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)
        self._record(message)

    def result(self, item: Any, terminal: bool = True) -> None:
        """A result (a rich table or a line) on stdout unless quiet, and in the run log; `terminal=False`: log only."""
        if terminal and not self.quiet:
            self.out.print(item, highlight=False, markup=False, soft_wrap=isinstance(item, str))
        self._record(item)

    def _record(self, item: Any) -> None:
        # Quiet silences the terminal, not the record: the log of a quiet run is as complete as any.
        for console in self._records:
            console.print(item, highlight=False, markup=False, soft_wrap=isinstance(item, str))

    @contextmanager
    def record(self, path: Path) -> Iterator[None]:
        """While open, every status line, epoch line and result is also written, as plain text, to `path`."""
        with open(path, "w", encoding="utf-8") as file:
            console = record_console(file)
            self._records.append(console)
            try:
                yield
            finally:
                self._records.remove(console)

    @contextmanager
    def listen(self, callback: Callable[[dict], None]) -> Iterator[None]:
        """While open, `callback` gets every history row passed to `epoch`, in order (trackers attach here)."""
        self._listeners.append(callback)
        try:
            yield
        finally:
            self._listeners.remove(callback)

    def epoch(self, row: dict, total: int | None = None, metric: str = "val_metric", show: bool = True) -> None:
        """One history row: its line (unless `show` is False) and the row to every listener."""
        if show:
            self.log(epoch_line(row, total, metric))
        for callback in self._listeners:
            callback(row)

    def best(self, history: list[dict], best: int, metric: str) -> None:
        """The line that ends a training: the epoch (kNN: the k) whose weights were kept, and its val value."""
        key = "k" if history and "k" in history[0] else "epoch"
        row = next((r for r in history if r.get(key) == best), None)
        value = f" ({metric} {row['val_metric']:.4f})" if row is not None else ""
        self.log(f"best {key} {best}{value}")

    @contextmanager
    def task(self, description: str, total: int, unit: str = "", size: int = 1) -> Iterator[TaskProgress]:
        """Progress of `total` steps; yields `advance(n)`, which also has `restart(description)`."""
        if not self.bars:
            write = None if self.quiet else self.log_progress
            progress = TaskProgress(description, total, unit, size, write)
            yield progress
            if write is not None and progress.printed not in (None, progress.done):
                write(progress.line())
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=True) as bar:
            yield TaskProgress(description, total, unit, size, None, (bar, bar.add_task(description, total=total)))

    def log_progress(self, line: str) -> None:
        """A plain progress line on stderr only: how fast a run went is not part of what it printed for its log."""
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)


def epoch_line(row: dict, total: int | None, metric: str) -> str:
    """'epoch 3/60: train loss 0.4123, val loss 0.3990, val_auroc 0.8123 (2 s)'; kNN rows name their k."""
    if "k" in row:
        head = f"k {row['k']}"
    else:
        head = f"epoch {row['epoch']}" + (f"/{total}" if total else "")
    parts = [f"train loss {row['train_loss']:.4f}"] if "train_loss" in row else []
    parts += [f"val loss {row['val_loss']:.4f}", f"{metric} {row['val_metric']:.4f}"]
    seconds = f" ({row['seconds']:.0f} s)" if row.get("seconds") is not None else ""
    return f"{head}: {', '.join(parts)}{seconds}"


def shown_epochs(total: int, lines: int = EPOCH_LINES) -> Callable[[int], bool]:
    """Which epochs of a `total`-epoch head training get a line: all up to `lines`, else every n-th and the last."""
    every = max(1, math.ceil(total / lines))
    return lambda epoch: epoch % every == 0 or epoch in (1, total)
