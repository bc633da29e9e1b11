"""build_report: one folder with tables, figures and a self-contained report.html, replaced whole or not at all."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

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


def test_html_embeds_figures_at_half_the_files_resolution(report_dir: Path) -> None:
    """The page carries 150 dpi copies (a quarter of the bytes); the 300 dpi files stay for print."""
    page = (report_dir / "report.html").read_text()
    embedded = {}
    for src in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page):
        with Image.open(io.BytesIO(base64.b64decode(src))) as image:
            embedded[image.size] = True
    for png in (report_dir / "figures").glob("*.png"):
        with Image.open(png) as image:
            assert (round(image.width / 2), round(image.height / 2)) in embedded, png.name


def test_html_names_both_files_of_every_figure(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    for png in (report_dir / "figures").glob("*.png"):
        assert f'href="figures/{png.stem}.pdf"' in page and f'href="figures/{png.name}"' in page, png.name
    widths = [int(w) for w in re.findall(r'<img src="[^"]+" width="(\d+)"', page)]
    assert len(widths) == len(list((report_dir / "figures").glob("*.png")))
    assert all(300 <= w <= 1600 for w in widths)  # shown at 100 dpi, not at the PNG's 300 dpi pixel size


def test_html_tables_wrap_text_and_keep_numbers_whole(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    assert "td.n span, td:first-child { white-space: nowrap; }" in page
    # An interval breaks, if the table is wide, only between its value and its brackets.
    assert re.search(r'<td class="n">(<strong>)?\d+\.\d <span>\[-?\d+\.\d, -?\d+\.\d\]</span>', page)
    assert re.search(r'<td class="n">(<strong>)?(\d+ vs \d+|<0\.001|\d\.\d{3})(</strong>)?</td>', page)
    assert re.search(r"<td>resnet18 / ", page)  # a setup name may wrap
    section = page[page.index("Provenance per run</h2>"):page.index("Figures</h2>")]
    assert section.count("<details>") == 1 and "rows: show" in section  # 24 runs fold away
    main = page[page.index("Main results</h2>"):page.index("Patient-level results</h2>")]
    assert "<details>" not in main


def test_patient_level_results_are_labelled(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    assert "Patient-level results</h2>" in page
    captions = re.findall(r"<figcaption>test AUROC per setup \(patient level: one pooled prediction per patient\)",
                          page)
    assert len(captions) == 2  # binary_lesion and cv; three-class has no patients


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


def _with_environments(study: Path, dest: Path) -> Path:
    runs = _small_study(study, dest)
    (runs / "resnet18-frozen-s0" / "environment.json").unlink(missing_ok=True)  # a run from before the record
    (runs / "dinov2_vits14-frozen-s0" / "environment.json").write_text(json.dumps({
        "medtransfer": "9.8.7", "python": "3.11.9", "platform": "Linux-6.1-x86_64",
        "packages": {"torch": "2.14.1", "timm": "1.0.20", "mlflow": None},
        "git": {"commit": "0123456789abcdef0123", "dirty": True}, "device": "cuda:0 (NVIDIA H100 80GB HBM3)",
        "command": ["medtransfer", "train", "my data.csv", "--seed", "3"], "seed": 3, "threads": 8,
        "started": "2026-12-02T18:00:00+00:00"}))
    return runs


def test_provenance_per_run(study: Path, tmp_path: Path) -> None:
    report = build_report(_with_environments(study, tmp_path))
    rows = {r["run_dir"].split("/")[-1]: r for _, r in pd.read_csv(report / "tables" / "provenance.csv").iterrows()}
    recorded, old = rows["dinov2_vits14-frozen-s0"], rows["resnet18-frozen-s0"]
    assert (recorded["medtransfer"], recorded["torch"], recorded["timm"]) == ("9.8.7", "2.14.1", "1.0.20")
    assert recorded["git_commit"] == "0123456789 (dirty)" and recorded["device"].startswith("cuda:0 (NVIDIA H100")
    assert recorded["command"] == "medtransfer train 'my data.csv' --seed 3" and pd.isna(recorded["package_mlflow"])
    assert (int(recorded["threads"]), int(recorded["seed"])) == (8, 3)
    assert old["medtransfer"] == "not recorded"
    page = (report / "report.html").read_text()
    section = page[page.index("Provenance per run</h2>"):page.index("Figures</h2>")]
    assert "cuda:0 (NVIDIA H100 80GB HBM3)" in section and "not recorded" in section
    assert "medtransfer train &#x27;my data.csv&#x27; --seed 3" in section


def test_a_damaged_environment_record_is_shown_not_fatal(study: Path, tmp_path: Path) -> None:
    runs = _with_environments(study, tmp_path)
    (runs / "dinov2_vits14-frozen-s0" / "environment.json").write_text("{broken")
    report = build_report(runs)
    provenance = pd.read_csv(report / "tables" / "provenance.csv")
    assert len(provenance) == 2 and provenance["medtransfer"].str.startswith("unreadable").sum() == 1
