"""The Python API: the names `medtransfer` exports, and docs/api.md's notebook session run verbatim."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import medtransfer

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
API = ("TrainConfig", "train", "Study", "run_study", "build_report", "predict", "inspect")


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_api_names_import_without_torch() -> None:
    """`import medtransfer` is cheap (names load on first use), and every documented name is there."""
    code = "import sys, medtransfer; print(sorted(set(medtransfer.__all__))); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert set(API) <= set(eval(out[0]))  # noqa: S307 - our own printed list
    assert out[1] == "False"
    assert all(callable(getattr(medtransfer, name)) for name in API)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        medtransfer.trian  # noqa: B018


def test_the_cli_calls_the_api_functions() -> None:
    """The command line is a map onto the same functions (not a second implementation)."""
    from medtransfer.cli import commands as cli

    source = Path(cli.__file__).read_text()
    for name in ("train", "run_study", "build_report", "predict", "inspect"):
        assert re.search(rf"from {re.escape(medtransfer._API[name])} import {name}\b", source), name


@pytest.mark.slow
def test_the_notebook_session_in_docs_api_md_runs_verbatim(tmp_path: Path, shared_data: Path, monkeypatch,
                                                           capsys) -> None:
    """Every python block of the page, as written, from a folder beside `shared/` (as a checkout is)."""
    code = "\n".join(python_blocks(DOC.read_text()))
    (tmp_path / "shared").symlink_to(shared_data.parent, target_is_directory=True)
    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - our own documentation
    printed = capsys.readouterr().out
    result, outcome = scope["result"], scope["outcome"]
    assert "train" in printed and "test" in printed  # inspect's counts per split
    assert 0.5 < result.metrics.test["auroc"].value <= 1.0
    assert result.run_dir.is_complete() and result.run_dir.path == Path("runs/api/frozen")
    probabilities = scope["predict"](result.run_dir.path, scope["images"])
    assert isinstance(probabilities, pd.DataFrame) and len(probabilities) == 3
    assert outcome.ran == 4 and (outcome.report / "report.html").is_file()
    assert f"test AUROC {result.metrics.test['auroc'].value:.3f}" in printed
    shift = scope["shift"]  # the external-set and subgroup example
    assert shift.external["site_b"].n == 51 and "site_b: 51 images" in printed
    sex = shift.subgroups["sex"]
    assert sex.subgroups and set(sex.subgroups) | set(sex.too_few) <= {"female", "male", "missing"}


def test_a_study_built_in_python_is_stored_as_yaml_and_resumes(tmp_path: Path) -> None:
    """run_study takes a Study object: its study.yaml reads back as the same Study, so --resume accepts it, and a
    different Study in the same folder is refused."""
    from medtransfer import Study, UserError, run_study

    study = Study(name="py", datasets={"a": {"data": "synthetic:n=60,size=16"}}, backbones=["resnet18"],
                  modes={"frozen": {"heads": ["linear"]}},
                  train={"weights": "none", "image_size": 16, "epochs": 2, "bootstrap": 100,
                         "cache_dir": str(tmp_path / "cache")})
    first = run_study(study, out=tmp_path / "study")
    assert first.ran == 1 and Study(**yaml.safe_load((tmp_path / "study" / "study.yaml").read_text())) == study
    again = run_study(study, out=tmp_path / "study", resume=True)
    assert again.skipped == 1 and again.ran == 0
    other = study.model_copy(update={"seeds": [0, 1]})
    with pytest.raises(UserError, match="other settings"):
        run_study(other, out=tmp_path / "study", resume=True)
