"""Backbones that cannot be had, through the installed console script: a hub model missing from an offline cache, a
family whose extra is not installed, `imagenet` for a non-timm model. One stderr line naming the model and the fix,
exit 2, no traceback, and no run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("medtransfer"))  # the installed console script


def run(argv: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The console script, quiet (errors only), in tmp_path, offline, with an empty Hugging Face cache there."""
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), **env}
    return subprocess.run([CLI, *argv, "-q"], capture_output=True, text=True, cwd=tmp_path, env=environ, timeout=300)


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("backbone, repo", [("rad_dino", "microsoft/rad-dino"), ("uni", "MahmoodLab/UNI"),
                                            ("hf:org/absent", "org/absent"),
                                            ("open_clip:hf-hub:org/absent-clip", "org/absent-clip")])
def test_an_uncached_hub_model_offline_is_one_line_with_the_fix(backbone, repo, tmp_path) -> None:
    result = run(["train", "synthetic:n=40", "--backbone", backbone, "--out", "run"], tmp_path)
    line = one_line(result)
    assert repo in line and "HF_HUB_OFFLINE" in line and f"hf download {repo}" in line
    assert not (tmp_path / "run").exists()


def test_a_missing_extra_is_one_line_naming_it(tmp_path) -> None:
    """open_clip shadowed by a package that fails to import, as on an install without the [clip] extra."""
    blocked = tmp_path / "blocked" / "open_clip"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('open_clip is not installed here')\n")
    result = run(["train", "synthetic:n=40", "--backbone", "biomedclip", "--out", "run"], tmp_path,
                 PYTHONPATH=str(blocked.parent))
    line = one_line(result)
    assert "biomedclip" in line and "pip install 'medtransfer[clip]'" in line
    assert not (tmp_path / "run").exists()


def test_imagenet_weights_for_a_transformers_model_point_to_pretrained(tmp_path) -> None:
    line = one_line(run(["train", "synthetic:n=40", "--backbone", "rad_dino", "--weights", "imagenet"], tmp_path))
    assert "--weights imagenet" in line and "--weights pretrained" in line
