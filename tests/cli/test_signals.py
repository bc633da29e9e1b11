"""Usage errors through the installed console script: whichever click or Typer class raises them, one stderr line
naming the command and its --help, a "did you mean" where one exists, exit 2 and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("medtransfer"))  # the installed console script

# (argv, what the one line must say)
USAGE_ERRORS = [
    (["train", "data.npz", "--epoch", "3"], ["medtransfer train:", "--epoch", "did you mean --epochs?"]),
    (["train", "data.npz", "--lrr", "0.1"], ["did you mean --lr?"]),
    (["--versio"], ["did you mean --version?"]),
    (["trian"], ["No such command 'trian'", "Did you mean 'train'?"]),
    (["reprot", "runs"], ["Did you mean 'report'?"]),
    (["demo", "--outt", "x"], ["medtransfer demo:", "did you mean --out?"]),
    (["train"], ["medtransfer train:", "Missing argument 'DATA'"]),
    (["inspect"], ["medtransfer inspect:", "Missing argument 'DATA'"]),
    (["predict"], ["medtransfer predict:", "Missing argument"]),
    (["run"], ["medtransfer run:", "Missing argument"]),
    (["report"], ["medtransfer report:", "Missing argument"]),
    (["train", "data.npz", "--backbone"], ["medtransfer train:", "'--backbone' requires an argument"]),
    (["train", "data.npz", "--mode", "frozn"], ["mode 'frozn'", "'frozen' or 'finetune'"]),
    (["train", "data.npz", "--lr", "abc"], ["'--lr'", "valid number"]),
    (["train", "data.npz", "--head-sweep=3"], ["'--head-sweep' does not take a value"]),
    (["run", "study.yaml", "--executor", "slurm"], ["medtransfer run:", "slurm"]),
]


@pytest.mark.parametrize("argv, says", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_a_usage_error_is_one_line_exit_2_and_no_traceback(argv, says, tmp_path):
    result = subprocess.run([CLI, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: medtransfer") and "--help`" in lines[0]
    for text in says:
        assert text in lines[0]
    assert not any(tmp_path.iterdir())  # a usage error writes nothing


@pytest.mark.parametrize("argv", [["-h"], ["--help"], ["train", "-h"], ["--version"]])
def test_help_and_version_exit_0_on_stdout(argv):
    result = subprocess.run([CLI, *argv], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""
    assert ("Usage: medtransfer" in result.stdout) or result.stdout.startswith("medtransfer ")
