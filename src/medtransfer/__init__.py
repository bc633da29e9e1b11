"""medtransfer: which pretrained backbone and transfer mode works best on your medical images.

The Python API is the one the command line calls:

    from medtransfer import TrainConfig, train, Study, run_study, build_report, predict, inspect

Names load on first use, so that `import medtransfer` (and the CLI's checking of bad options) stays fast and
imports neither torch nor the models.
"""

from __future__ import annotations

from importlib import import_module
from importlib import metadata as _metadata
from typing import TYPE_CHECKING

try:  # declared once, in pyproject.toml
    __version__ = _metadata.version("medtransfer")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

# Public name → the module that defines it.
_API = {
    "TrainConfig": "medtransfer.config",
    "parse_config": "medtransfer.config",
    "train": "medtransfer.runner",
    "TrainResult": "medtransfer.runner",
    "Study": "medtransfer.study.schema",
    "run_study": "medtransfer.study.run",
    "StudyOutcome": "medtransfer.study.run",
    "build_report": "medtransfer.report.build",
    "predict": "medtransfer.inference",
    "inspect": "medtransfer.inspection",
    "RunDir": "medtransfer.rundir",
    "RunMetrics": "medtransfer.rundir",
    "UserError": "medtransfer.errors",
}

__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from medtransfer.config import TrainConfig, parse_config
    from medtransfer.errors import UserError
    from medtransfer.inference import predict
    from medtransfer.inspection import inspect
    from medtransfer.report.build import build_report
    from medtransfer.rundir import RunDir, RunMetrics
    from medtransfer.runner import TrainResult, train
    from medtransfer.study.run import StudyOutcome, run_study
    from medtransfer.study.schema import Study


def __getattr__(name: str) -> object:
    """Load a public name from its module on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'medtransfer' has no attribute {name!r}")
    value = getattr(import_module(_API[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The public names, for tab completion."""
    return sorted(__all__)
