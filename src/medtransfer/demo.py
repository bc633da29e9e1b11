"""`medtransfer demo`: the shipped demo study (synthetic images, random-init backbones), ending in a report."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from medtransfer.progress import Reporter
from medtransfer.study.run import StudyOutcome, run_study

TITLE = "medtransfer demo (synthetic images)"
NOTE = "Weights were random (`none`, offline); with `--weights pretrained` frozen features become useful."


def demo_study() -> Path:
    """The demo study file shipped inside the package (also at studies/demo.yaml)."""
    return Path(str(files("medtransfer") / "studies" / "demo.yaml"))


def run_demo(out: Path, reporter: Reporter | None = None) -> StudyOutcome:
    """Run the demo study into `out` (finished runs there are reused) and build its report."""
    return run_study(demo_study(), out, resume=True, reporter=reporter or Reporter(quiet=True))
