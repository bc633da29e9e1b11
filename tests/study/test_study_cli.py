"""The `run` and `report` commands: bad study files and a missing Ray are one line and exit 2."""

from __future__ import annotations

import sys

from helpers import run_cli

MINIMAL = """
name: cli
datasets: {syn: {data: "synthetic:n=60,size=16,groups=30"}}
backbones: [{name: resnet18, image_size: 32, weights: none}]
modes: {frozen: {epochs: 3}}
train: {bootstrap: 100, workers: 0, cache_dir: CACHE}
"""


def test_bad_study_key_is_one_line(tmp_path, monkeypatch, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(MINIMAL.replace("name: cli", "name: cli\nlerning_rate: 1"))
    code, _, err = run_cli(["run", str(study), "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "lerning_rate" in err
    assert not (tmp_path / "out").exists()


def test_missing_dataset_fails_before_any_run(tmp_path, monkeypatch, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(MINIMAL.replace('"synthetic:n=60,size=16,groups=30"', str(tmp_path / "nowhere.npz")))
    code, _, err = run_cli(["run", str(study), "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 2 and "nowhere.npz" in err
    assert not (tmp_path / "out" / "runs").exists()


def test_ray_executor_without_ray_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # importing ray now fails, as where the extra is absent
    study = tmp_path / "s.yaml"
    study.write_text(MINIMAL.replace("CACHE", str(tmp_path / "cache")))
    code, _, err = run_cli(["run", str(study), "--out", str(tmp_path / "out"), "--executor", "ray"],
                           monkeypatch, capsys)
    assert code == 2 and "pip install 'medtransfer[ray]'" in err
    assert not (tmp_path / "out").exists()


def test_run_then_report_command(tmp_path, monkeypatch, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(MINIMAL.replace("CACHE", str(tmp_path / "cache")))
    code, out, err = run_cli(["run", str(study), "--out", str(tmp_path / "out"), "-q"], monkeypatch, capsys)
    assert code == 0, err
    report = tmp_path / "out" / "report"
    first = (report / "report.html").stat().st_mtime_ns
    code, out, err = run_cli(["report", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 0, err
    assert out.strip() == str(report)
    assert (report / "report.html").stat().st_mtime_ns > first
    code, _, err = run_cli(["report", str(tmp_path / "empty")], monkeypatch, capsys)
    assert code == 2 and "empty" in err


def test_duplicate_dataset_key_is_one_line_naming_key_and_lines(tmp_path, monkeypatch, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(MINIMAL.replace("datasets: {syn: {data: \"synthetic:n=60,size=16,groups=30\"}}",
                                     "datasets:\n  syn: {data: \"synthetic:n=60\"}\n  syn: {data: \"synthetic:n=90\"}"))
    code, _, err = run_cli(["run", str(study), "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "duplicate key 'syn' on lines 4 and 5" in err  # MINIMAL opens with a blank line
    assert not (tmp_path / "out").exists()


def test_another_study_in_the_folder_is_one_line_with_the_flag(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.yaml").write_text(MINIMAL.replace("name: cli", "name: earlier"))
    before = (out / "study.yaml").read_text()
    study = tmp_path / "s.yaml"
    study.write_text(MINIMAL.replace("CACHE", str(tmp_path / "cache")))
    code, _, err = run_cli(["run", str(study), "--out", str(out), "--resume"], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "another study ('earlier')" in err and "--replace-study" in err
    assert (out / "study.yaml").read_text() == before and sorted(p.name for p in out.iterdir()) == ["study.yaml"]
