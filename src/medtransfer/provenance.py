"""Where a run came from: versions, git commit, device, command line, seed and threads (environment.json)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import medtransfer

if TYPE_CHECKING:
    import torch

    from medtransfer.config import TrainConfig

# Distribution names whose versions change a run's numbers: the core, and every optional family and extra.
PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "scikit-learn",
    "transformers",
    "open_clip_torch",
    "peft",
    "ray",
    "mlflow",
    "tensorboard",
    "huggingface_hub",
    "safetensors",
)
# A package that ships under another distribution name too: the [mlflow] extra installs mlflow-skinny.
DISTRIBUTIONS = {"mlflow": ("mlflow", "mlflow-skinny")}
GIT_TIMEOUT_S = 5.0  # a hung git (network filesystem, lock) must never hold up a run


def environment_record(cfg: TrainConfig, device: str, started: datetime | None = None,
                       command: list[str] | None = None) -> dict[str, Any]:
    """The provenance of one run, JSON-serialisable, as written to environment.json (`started`: default now;
    `command`: default this process's command line)."""
    started = started or datetime.now(UTC)
    return {
        "medtransfer": medtransfer.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_state(Path(medtransfer.__file__).parent),
        "device": device,
        "command": command_line() if command is None else command,
        "seed": cfg.seed,
        "threads": thread_count(),
        "started": started.astimezone(UTC).isoformat(timespec="seconds"),
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package, None where it is not installed; imports none of them."""
    return {name: installed_version(*DISTRIBUTIONS.get(name, (name,))) for name in names}


def installed_version(*distributions: str) -> str | None:
    """The version of the first of `distributions` that is installed, or None."""
    for distribution in distributions:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def git_state(folder: Path) -> dict[str, Any] | None:
    """{"commit", "dirty"} of the git work tree that tracks `folder`'s files, or None (no git, not tracked)."""
    # ls-files, not rev-parse alone: a wheel installed into an ignored .venv inside some repository is inside a
    # work tree too, but its files are not that repository's, so its commit would be a lie.
    if _git(folder, "ls-files", "--error-unmatch", "__init__.py") is None:
        return None
    commit = _git(folder, "rev-parse", "HEAD")
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return None
    return {"commit": commit, "dirty": bool(status)}


def _git(folder: Path, *args: str) -> str | None:
    """Stripped stdout of `git -C folder ARGS`, or None on any failure: provenance never fails a run."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def command_line() -> list[str]:
    """sys.argv with argv[0] reduced to its basename (the full path says nothing about the run)."""
    if not sys.argv:
        return []
    return [os.path.basename(sys.argv[0]), *sys.argv[1:]]


def thread_count() -> int:
    """Intra-op threads: torch's own setting when torch is loaded (a run always has it), else the CPU count."""
    if "torch" in sys.modules:
        import torch

        return torch.get_num_threads()
    return os.cpu_count() or 1


def device_name(device: torch.device) -> str:
    """The device and its hardware name, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu (AMD EPYC 7763 ...)'."""
    import torch

    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({cpu_model()})"
    return f"{device} ({platform.processor() or platform.machine() or 'unknown'})"


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass  # not Linux: fall through to platform
    return platform.processor() or platform.machine() or "unknown"
