"""build_report: one folder with tables, figures and a self-contained report.html, replaced whole or not at all."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from medtransfer.errors import UserError
from medtransfer.report.build import build_report


def test_report_layout(report_dir: Path) -> None:
    assert report_dir.name == "report" and (report_dir / "report.html").is_file()
    for name in ("main_table", "pairwise", "cost"):
        for ext in ("md", "tex", "csv"):
            assert (report_dir / "tables" / f"{name}.{ext}").stat().st_size > 0
    assert (report_dir / "tables" / "main_table_standalone.tex").is_file()
    assert not list(report_dir.parent.glob(".report*"))  # no staging or old copy left behind


def test_html_is_self_contained(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == len(list((report_dir / "figures").glob("*.png")))
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "<style>" in page and "<link" not in page and "<script" not in page
    assert not re.search(r'(src|href)="(https?:|/|\w+\.png)', page)
    assert page.count("<table>") >= 3 and "<strong>" in page


def test_html_lists_incomplete_runs_visibly(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    section = page[page.index("Runs not included"):page.index("Main results</h2>")]
    assert "crashed-copy" in section and "DONE" in section
    assert 'class="warn"' in section


def _small_study(study: Path, dest: Path) -> Path:
    for name in ("resnet18-frozen-s0", "dinov2_vits14-frozen-s0"):
        shutil.copytree(study / "binary_lesion" / name, dest / "runs" / name)
    return dest / "runs"


def test_rebuild_replaces_the_old_report(study: Path, tmp_path: Path) -> None:
    runs = _small_study(study, tmp_path)
    first = build_report(runs)
    (first / "stale.txt").write_text("from an older report")
    second = build_report(runs, metric="accuracy")
    assert second == first and not (second / "stale.txt").exists()
    assert (second / "report.html").is_file()
    assert "test Accuracy" in (second / "report.html").read_text()
    assert not list(runs.glob(".report*"))


def test_a_crash_keeps_the_old_report_and_leaves_no_partial_one(study: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _small_study(study, tmp_path)
    report = build_report(runs)
    before = (report / "report.html").read_bytes()

    def crash(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("medtransfer.report.build.write_html", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        build_report(runs)
    assert (report / "report.html").read_bytes() == before
    assert not list(runs.glob(".report*"))


def test_no_finished_runs_is_a_user_error(study: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="holds no finished runs"):
        build_report(tmp_path)
    shutil.copytree(study / "binary_lesion" / "crashed-copy", tmp_path / "crashed")
    with pytest.raises(UserError, match="holds no finished runs") as caught:
        build_report(tmp_path)
    assert "medtransfer run" in caught.value.line()
    assert not (tmp_path / "report").exists()


def test_unknown_metric_is_a_user_error(study: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a metric"):
        build_report(_small_study(study, tmp_path), metric="dice")
