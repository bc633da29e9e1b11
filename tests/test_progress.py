"""What a command prints: results on stdout, the rest on stderr, plain lines when piped, a plain-text run log."""

from __future__ import annotations

import re

import pytest
from rich.table import Table

from medtransfer import progress
from medtransfer.progress import Reporter, epoch_line, shown_epochs

ROW = {"epoch": 3, "train_loss": 0.41234, "val_loss": 0.39901, "val_metric": 0.81234, "lr": 1e-3, "seconds": 2.4}


def table(title: str) -> Table:
    shown = Table(title=title)
    shown.add_column("metric")
    shown.add_row("AUROC [low, high]")  # brackets must survive: markup is off
    return shown


def test_results_go_to_stdout_and_status_to_stderr(capsys):
    reporter = Reporter()
    reporter.log("note: something [about] the data")
    reporter.epoch(ROW, 60, "val_auroc")
    reporter.result(table("the results"))
    out, err = capsys.readouterr()
    assert "the results" in out and "AUROC [low, high]" in out and "note" not in out and "epoch" not in out
    assert "note: something [about] the data" in err and "epoch 3/60" in err and "the results" not in err


def test_quiet_prints_nothing_but_the_log_keeps_everything(tmp_path, capsys):
    reporter = Reporter(quiet=True)
    with reporter.record(tmp_path / "train.log"):
        reporter.log("status line")
        reporter.epoch(ROW, 60, "val_auroc")
        reporter.best([ROW], 3, "val_auroc")
        reporter.result(table("final table"))
        with reporter.task("decode", 4) as advance:
            advance(4)
    assert capsys.readouterr() == ("", "")
    log = (tmp_path / "train.log").read_text()
    assert log.splitlines()[:3] == ["status line", epoch_line(ROW, 60, "val_auroc"),
                                    "best epoch 3 (val_auroc 0.8123)"]
    assert "final table" in log and "AUROC [low, high]" in log


def test_the_log_is_plain_text_even_when_the_terminal_gets_colour(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "make_console",
                        lambda stderr=False: progress.Console(force_terminal=True, color_system="truecolor",
                                                              stderr=stderr))
    reporter = Reporter()
    with reporter.record(tmp_path / "train.log"):
        reporter.result(table("[bold]coloured[/bold] on screen"))
        reporter.log("a line")
    log = (tmp_path / "train.log").read_text()
    assert "\x1b" not in log and "a line" in log and "coloured on screen" in log
    reporter.log("after the run")  # the record is closed: nothing more lands in that run's log
    assert "after the run" not in (tmp_path / "train.log").read_text()


def test_every_row_reaches_listeners_in_order_shown_or_not(capsys):
    reporter, rows = Reporter(), []
    later = [{**ROW, "epoch": e} for e in range(1, 5)]
    with reporter.listen(rows.append):
        for row in later:
            reporter.epoch(row, 4, "val_auroc", show=row["epoch"] == 4)
    reporter.epoch(ROW)  # outside `listen`: the listener is gone
    assert rows == later
    err = capsys.readouterr().err
    assert "epoch 4/4" in err and "epoch 2/4" not in err


def test_epoch_lines_of_heads_and_knn():
    assert epoch_line(ROW, 60, "val_auroc") == \
        "epoch 3/60: train loss 0.4123, val loss 0.3990, val_auroc 0.8123 (2 s)"
    knn = {"k": 20, "val_loss": 0.5, "val_metric": 0.75}
    assert epoch_line(knn, None, "val_accuracy") == "k 20: val loss 0.5000, val_accuracy 0.7500"


def test_best_names_the_epoch_or_the_k(capsys):
    reporter = Reporter()
    reporter.best([{**ROW, "epoch": 1, "val_metric": 0.5}, ROW], 3, "val_auroc")
    reporter.best([{"k": 10, "val_loss": 0.4, "val_metric": 0.6}, {"k": 20, "val_loss": 0.3, "val_metric": 0.7}],
                  20, "val_accuracy")
    assert capsys.readouterr().err.splitlines() == ["best epoch 3 (val_auroc 0.8123)",
                                                    "best k 20 (val_accuracy 0.7000)"]


@pytest.mark.parametrize("total", [1, 5, 10, 11, 60, 100, 1000])
def test_a_long_head_training_shows_about_ten_lines_with_the_first_and_last(total):
    shown = [e for e in range(1, total + 1) if shown_epochs(total)(e)]
    assert shown[0] == 1 and shown[-1] == total
    assert len(shown) == total if total <= 10 else 5 <= len(shown) <= 12  # never a line per epoch


def test_piped_progress_is_plain_periodic_lines(monkeypatch, capsys):
    clock = iter(range(0, 1000, 4))  # each reading of the clock is 4 s later
    monkeypatch.setattr(progress, "clock", lambda: float(next(clock)))
    reporter = Reporter()
    assert not reporter.bars  # captured stderr is not a terminal
    with reporter.task("fine-tune epoch 1/2", 10, "batches", size=32) as advance:
        for _ in range(10):
            advance(1)
        advance.restart("fine-tune epoch 2/2")
        advance(1)
    lines = capsys.readouterr().err.splitlines()
    assert 2 <= len(lines) <= 6  # every ~10 s, not every batch
    pattern = re.compile(r"fine-tune epoch [12]/2: \d+/10 batches \(\d+%\), [\d.]+ img/s")
    assert all(pattern.fullmatch(line) for line in lines), lines
    assert lines[-1].startswith("fine-tune epoch 2/2: 1/10 batches (10%)")


def test_a_quick_task_prints_no_progress_line(capsys):
    with Reporter().task("decode images", 100) as advance:
        advance(100)
    assert capsys.readouterr().err == ""
