"""The report beyond the internal test split: external sets (metric, gap, paired comparisons, scatter) and
subgroups (table with the too-few listed, worst and largest gap, forest plots), from copies of the study's runs with
`external:NAME` rows and `subgroup:COL` columns added as the runner writes them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from medtransfer.report.aggregate import summarise
from medtransfer.report.build import build_report
from medtransfer.report.collect import collect_runs
from medtransfer.report.shift import ShiftSummary, summarise_shift
from medtransfer.rundir import CONFIG_FILE, PREDICTIONS_FILE

BINARY = ("resnet18-frozen", "resnet18-finetune", "dinov2_vits14-frozen", "dinov2_vits14-finetune")
THREE = ("resnet18-frozen", "resnet18-finetune")
MIN_CASES = 3


def _external_rows(test: pd.DataFrame, name: str, flip: bool) -> pd.DataFrame:
    """The test rows again as an external set: new sample and patient ids, no metadata; `flip` reverses the class
    probabilities (a binary model that ranks the external set backwards: its AUROC is 1 − the internal one)."""
    rows = test.assign(split=f"external:{name}", sample_id=name + "-" + test["sample_id"])
    rows["group"] = np.where(rows["group"].notna(), name + "-" + rows["group"].astype(str), None)
    probs = [c for c in rows if c.startswith("prob_")]
    if flip:
        rows[probs] = rows[probs[::-1]].to_numpy()
    for column in [c for c in rows if c.startswith("subgroup:")]:
        rows[column] = None  # the external source has no such column: blank
    return rows


def _subgroup_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """sex and age per test patient (one patient X, one age missing: too few), placed before the prob_ columns."""
    patients = sorted(frame.loc[frame["split"] == "test", "group"].unique())
    sex = {g: "X" if i == 0 else "FM"[i % 2] for i, g in enumerate(patients)}
    age = {g: "" if i == 1 else str(20 + 5 * i) for i, g in enumerate(patients)}
    at = next(k for k, c in enumerate(frame.columns) if c.startswith("prob_"))
    frame.insert(at, "subgroup:sex", frame["group"].map(sex))
    frame.insert(at + 1, "subgroup:age", frame["group"].map(age))
    return frame


def _read(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / PREDICTIONS_FILE, dtype=str, keep_default_na=False).replace("", None)


def _add_shift(run: Path, external: dict[str, bool], subgroups: bool, samples: Path | None = None) -> None:
    """External rows (and subgroup columns) in a copied run; `samples`: the run whose test samples every run's
    external set holds (cross-validated folds test on different parts, but score one external set whole)."""
    config = yaml.safe_load((run / CONFIG_FILE).read_text())
    frame = _read(run)
    if subgroups:
        frame = _subgroup_columns(frame)
        config |= {"subgroups": ["sex", "age:0,50,120"], "subgroup_min": MIN_CASES}
    test = frame[frame["split"] == "test"]
    if samples is not None:
        shared = _read(samples).query("split == 'test'").reset_index(drop=True)
        probs = [c for c in shared if c.startswith("prob_")]
        shared[probs] = np.resize(test[probs].to_numpy(), shared[probs].shape)  # this model's own probabilities
        test = shared
    frame = pd.concat([frame, *(_external_rows(test, name, flip) for name, flip in external.items())])
    config["external"] = {name: f"synthetic:{name}" for name in external}
    frame.to_csv(run / PREDICTIONS_FILE, index=False)
    (run / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="session")
def shift_study(study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """binary_lesion (external `same` and `flipped`, subgroups sex and age), three-class (external `same`), and the
    cross-validated cv task (external `same`: its folds pool on test, so its gap cannot be paired)."""
    root = tmp_path_factory.mktemp("shift") / "runs"
    for task, names, external, subgroups in (("binary_lesion", BINARY, {"same": False, "flipped": True}, True),
                                             ("three-class", THREE, {"same": False}, False)):
        for name in names:
            for seed in (0, 1):
                shutil.copytree(study / task / f"{name}-s{seed}", root / task / f"{name}-s{seed}")
                _add_shift(root / task / f"{name}-s{seed}", external, subgroups)
    shutil.copytree(study / "cv", root / "cv")
    for run in (root / "cv").iterdir():
        _add_shift(run, {"same": False}, False, samples=study / "cv" / "resnet18-frozen-fold0-s0")
    return root


@pytest.fixture(scope="session")
def shift_summary(shift_study: Path) -> tuple[pd.DataFrame, ShiftSummary]:
    """The main-table rows and the shift summary of the shift study."""
    index = collect_runs(shift_study)
    summary = summarise(index)
    return summary.setups, summarise_shift(index, summary)


@pytest.fixture(scope="session")
def shift_report(shift_study: Path) -> Path:
    """The report of the shift study."""
    return build_report(shift_study)


def test_an_external_copy_of_test_has_the_internal_value_and_no_gap(shift_summary) -> None:
    setups, shift = shift_summary
    same = shift.external[shift.external["external"] == "same"].set_index(["task", "setup"])
    assert len(same) == len(BINARY) + len(THREE) + 1  # every setup of the three tasks, the cv one included
    for (task, setup), r in same.iterrows():
        main = setups[(setups["task"] == task) & (setups["setup"] == setup)].iloc[0]
        if task != "cv":  # cv pools its folds on test but has 3 fold models per seed on the external set
            assert r["external_auroc"] == pytest.approx(main["auroc"])
            assert r["gap_auroc"] == pytest.approx(0.0, abs=1e-12)
            assert r["gap_auroc_low"] <= 0 <= r["gap_auroc_high"]
            assert r["external_accuracy_low"] <= r["external_accuracy"] <= r["external_accuracy_high"]
        assert r["internal_auroc"] == main["auroc"] and r["internal_ci"] == main["ci"]
    assert "patients" in same.loc[("binary_lesion", "resnet18 / frozen + linear"), "external_ci"]
    assert "images" in same.loc[("three-class", "resnet18 / frozen + linear"), "external_ci"]
    cv = same.xs("cv", level="task").iloc[0]
    assert np.isnan(cv["gap_auroc"]) and cv["n_seeds"] == 6 and "6 fold models" in cv["external_ci"]
    assert any(note.startswith("cv / ") and "no gap" in note for note in shift.external_notes)


def test_a_flipped_external_set_has_the_mirrored_auroc_and_its_gap(shift_summary) -> None:
    setups, shift = shift_summary
    flipped = shift.external[shift.external["external"] == "flipped"]
    assert len(flipped) == len(BINARY)
    for _, r in flipped.iterrows():
        main = setups[(setups["task"] == r["task"]) & (setups["setup"] == r["setup"])].iloc[0]
        assert r["external_auroc"] == pytest.approx(1 - main["auroc"])  # seed mean of 1 − each seed's AUROC
        assert r["gap_auroc"] == pytest.approx(2 * main["auroc"] - 1)
        assert r["gap_auroc_low"] <= r["gap_auroc"] <= r["gap_auroc_high"]
        assert "independently" in r["gap_ci"] and "2 seeds" in r["gap_ci"]


def test_external_pairs_are_the_internal_pairs_on_each_set(shift_summary, shift_report: Path) -> None:
    _, shift = shift_summary
    internal = pd.read_csv(shift_report / "tables" / "pairwise.csv")
    pairs = shift.external_pairs
    for (task, name), block in pairs.groupby(["task", "external"]):
        mine = internal[internal["task"] == task]
        assert set(zip(block["a"], block["b"])) == set(zip(mine["a"], mine["b"])), (task, name)
        adjusted = block["auroc_p_holm"].to_numpy()
        assert (adjusted >= block["auroc_p"].to_numpy() - 1e-12).all()
    assert set(pairs["external"]) == {"same", "flipped"}
    # each set is its own family, scored on its own predictions: the flipped set mirrors the differences
    binary = pairs[pairs["task"] == "binary_lesion"].set_index(["external", "a", "b"]).sort_index()
    np.testing.assert_allclose(binary.loc["flipped", "auroc_diff"], -binary.loc["same", "auroc_diff"], atol=1e-12)


def test_subgroups_list_every_test_patient_once_per_column(shift_summary) -> None:
    _, shift = shift_summary
    rows = shift.subgroups
    assert set(rows["task"]) == {"binary_lesion"} and set(rows["column"]) == {"sex", "age:0,50,120"}
    for (setup, column), block in rows.groupby(["setup", "column"]):
        assert block["n_cases"].sum() == 12, (setup, column)  # every test patient in one subgroup
        too_few = block[~block["analysed"]]
        assert (too_few["n_cases"] < MIN_CASES).all() and (block[block["analysed"]]["n_cases"] >= MIN_CASES).all()
    sex = rows[rows["column"] == "sex"]
    assert set(sex.loc[~sex["analysed"], "subgroup"]) == {"X"}  # listed with its count, not dropped
    assert set(rows.loc[(rows["column"] != "sex") & ~rows["analysed"], "subgroup"]) == {"missing"}
    gaps = shift.subgroup_gaps
    auroc = gaps[gaps["metric"] == "auroc"]
    assert len(auroc) == len(BINARY) * 2
    for _, g in auroc.iterrows():
        assert g["gap"] >= 0 and g["gap_low"] <= g["gap_high"] and g["highest"] != g["lowest"]
        block = rows[(rows["setup"] == g["setup"]) & (rows["column"] == g["column"]) & rows["analysed"]]
        assert g["worst"] == pytest.approx(block["auroc"].min())


def test_the_report_writes_and_shows_the_new_tables_in_order(shift_report: Path) -> None:
    tables = shift_report / "tables"
    for name in ("external", "external_pairwise", "subgroups"):
        for ext in ("md", "tex", "csv"):
            assert (tables / f"{name}.{ext}").is_file(), f"{name}.{ext}"
    html = (shift_report / "report.html").read_text()
    order = [html.index(f">{title}</h2>") for title in
             ("Pairwise comparisons", "Internal vs external", "Paired comparisons on external sets", "Subgroups",
              "Cost per run")]
    assert order == sorted(order)
    md = (tables / "subgroups.md").read_text()
    assert "| X | 1 |" in md and "fewer than 3 cases" in md and "largest gap" in md
    assert "gap: not computed" in (tables / "external.md").read_text()  # the cv setup, and the caption says why


def test_scatter_and_forest_figures_per_task_and_column(shift_report: Path) -> None:
    figures = shift_report / "figures"
    names = {p.name for p in figures.glob("*.png")}
    expected = {"external_binary_lesion.png", "external_three-class.png", "external_cv.png",
                "forest_sex_binary_lesion.png", "forest_age_0_50_120_binary_lesion.png"}
    assert expected <= names
    assert not {n for n in names if n.startswith("forest_") and not n.endswith("_binary_lesion.png")}
    for name in expected:
        assert (figures / name).with_suffix(".pdf").is_file()
        with Image.open(figures / name) as image:
            assert np.asarray(image.convert("L")).std() > 10, f"{name} looks blank"
