"""environment.json's record: keys and types, versions from the installed metadata, the git commit, the device."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

import pytest
import torch

import medtransfer
from medtransfer import provenance
from medtransfer.config import TrainConfig

KEYS = {"medtransfer", "python", "platform", "packages", "git", "device", "command", "seed", "threads", "started"}


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(sys, "argv", ["/some/where/bin/medtransfer", "train", "synthetic:", "--seed", "7"])
    return provenance.environment_record(TrainConfig(data="synthetic:", seed=7), "cpu (Test CPU)")


def test_record_has_exactly_the_keys_with_json_types(record: dict) -> None:
    assert set(record) == KEYS
    assert json.loads(json.dumps(record)) == record
    assert record["seed"] == 7 and record["device"] == "cpu (Test CPU)"
    assert record["command"] == ["medtransfer", "train", "synthetic:", "--seed", "7"]
    assert isinstance(record["threads"], int) and record["threads"] >= 1
    assert record["threads"] == torch.get_num_threads()  # torch is loaded here, as in a run
    assert record["started"].endswith("+00:00") and "T" in record["started"]
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))


def test_started_is_the_given_time_in_utc() -> None:
    started = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=timezone(timedelta(hours=2)))
    record = provenance.environment_record(TrainConfig(data="synthetic:"), "cpu", started=started)
    assert record["started"] == "2026-01-02T01:04:05+00:00"


def test_versions_are_the_installed_ones(record: dict) -> None:
    assert record["medtransfer"] == metadata.version("medtransfer") == medtransfer.__version__
    assert set(record["packages"]) == set(provenance.PACKAGES)
    for name, version in record["packages"].items():
        installed = [d.version for d in metadata.distributions() if d.name in provenance.DISTRIBUTIONS.get(name, [name])]
        assert version == (installed[0] if installed else None), name


def test_a_missing_package_reads_none(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.version

    def version(name: str) -> str:
        if name == "timm":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    versions = provenance.package_versions()
    assert versions["timm"] is None
    assert versions["torch"] == real("torch")


def test_mlflow_reads_the_skinny_distribution_too(monkeypatch: pytest.MonkeyPatch) -> None:
    def version(name: str) -> str:
        if name != "mlflow-skinny":
            raise metadata.PackageNotFoundError(name)
        return "3.18.0"

    monkeypatch.setattr(metadata, "version", version)
    assert provenance.package_versions(("mlflow", "torch")) == {"mlflow": "3.18.0", "torch": None}


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_is_the_work_trees_head(record: dict) -> None:
    source = Path(medtransfer.__file__).parent
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("medtransfer is not installed from a git work tree")
    assert record["git"]["commit"] == head.stdout.strip()
    assert len(record["git"]["commit"]) == 40
    assert isinstance(record["git"]["dirty"], bool)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_dirty_follows_tracked_changes(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "__init__.py").write_text("x = 1\n")
    git("add", "__init__.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    assert provenance.git_state(tmp_path)["dirty"] is False
    (tmp_path / "__init__.py").write_text("x = 2\n")
    assert provenance.git_state(tmp_path)["dirty"] is True


def test_no_git_state_outside_a_work_tree_or_without_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "__init__.py").write_text("")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # do not find a repository above tmp
    assert provenance.git_state(tmp_path) is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    assert provenance.git_state(Path(medtransfer.__file__).parent) is None


def test_cpu_device_name_carries_the_cpu_model() -> None:
    name = provenance.device_name(torch.device("cpu"))
    assert name.startswith("cpu (") and name.endswith(")")
    assert name == f"cpu ({provenance.cpu_model()})" and provenance.cpu_model()


def test_cuda_device_name_carries_the_gpu_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"Fake GPU {index}")
    assert provenance.device_name(torch.device("cuda", 1)) == "cuda:1 (Fake GPU 1)"
