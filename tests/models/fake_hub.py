"""A Hugging Face cache laid out as huggingface_hub writes it (`models--ORG--NAME/refs/main`, `snapshots/COMMIT/`),
for tests that load hub models with no network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

COMMIT_A = "0123456789abcdef0123456789abcdef01234567"
COMMIT_B = "89abcdef0123456789abcdef0123456789abcdef"


def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HUB_OFFLINE=1 and an empty cache under tmp_path; huggingface_hub read both at import, so its constants are
    patched too. Returns the hub cache folder (HF_HUB_CACHE)."""
    home = tmp_path / "hf_home"
    (home / "hub").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    return home / "hub"


def put_snapshot(cache: Path, repo_id: str, files: dict[str, Path], commit: str = COMMIT_A,
                 ref: str | None = "main") -> Path:
    """Copy `files` (name in the repo → source file) into the cache as commit `commit` of `repo_id`, pointing `ref`
    at it; returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def snapshot_env(cache: Path) -> dict[str, str]:
    """Environment variables that point a subprocess (the console script) at this offline cache."""
    return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(cache.parent), "HF_HUB_CACHE": str(cache)}
