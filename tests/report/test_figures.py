"""Figures: every one as PDF and 300 dpi PNG; one colour and one name per setup; legends outside the data; ROC
legends that read as the table; learning curves per mode with the best epoch; patient-level bars."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import roc_curve

from medtransfer.evaluation.metrics import auroc
from medtransfer.report.aggregate import summarise
from medtransfer.report.collect import collect_runs
from medtransfer.report.diagnostics import (
    Drawn,
    confusion_figure,
    drawn,
    reliability_figure,
    roc_figure,
    roc_points,
)
from medtransfer.report.figures import learning_curves, metric_bars
from medtransfer.report.style import SetupStyle
from medtransfer.rundir import RunDir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KINDS = ("bars", "roc", "confusion", "learning", "reliability")


def _md_rows(path: Path) -> list[list[str]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    return [[c.strip().strip("*") for c in line.strip("|").split(" | ")] for line in lines[2:]]


def test_every_figure_is_a_pdf_and_a_300_dpi_png(report_dir: Path) -> None:
    pngs = sorted((report_dir / "figures").glob("*.png"))
    # three tasks × five kinds, one scarcity curve, patient-level bars for the two tasks with patients
    assert len(pngs) == 3 * len(KINDS) + 1 + 2
    assert len(list((report_dir / "figures").glob("*.pdf"))) == len(pngs)
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_SIGNATURE, png.name
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-", png.name
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.info["dpi"] == pytest.approx((300, 300), abs=0.01), png.name
            width, height = image.size
            assert width >= 1500 and height >= 800, (png.name, image.size)  # at least 5 × 2.7 inches
            assert np.asarray(image.convert("L")).std() > 10, f"{png.name} looks blank"


def test_each_task_has_each_kind(report_dir: Path) -> None:
    names = {p.name for p in (report_dir / "figures").glob("*.png")}
    for task in ("binary_lesion", "three-class"):
        assert {f"{kind}_{task}.png" for kind in KINDS} <= names
    assert "scarcity_binary_lesion.png" in names  # resnet18 frozen ran at 50% and 100% of the training data
    assert "scarcity_three-class.png" not in names
    assert {"bars_patients_binary_lesion.png", "bars_patients_cv.png"} <= names  # the tasks with patients
    assert "bars_patients_three-class.png" not in names


def test_binary_roc_uses_the_positive_class() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, 50), 0, 1)
    fpr, tpr = roc_points(y, np.column_stack([1 - p1, p1]))
    ref_fpr, ref_tpr, _ = roc_curve(y, p1)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)


def _fake(setup: str, seed: int, classes: int = 3, n: int = 60) -> Drawn:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    prob = rng.dirichlet(np.ones(classes), n) + 0.5 * np.eye(classes)[y]
    return Drawn(setup, y, prob / prob.sum(1, keepdims=True), [f"c{k}" for k in range(classes)], "0", False,
                 (0.8, 0.7, 0.9))


def _line_colours(fig: Figure) -> dict[str, tuple]:
    return {line.get_label().split(" (")[0]: to_rgba(line.get_color()) for ax in fig.axes for line in ax.lines
            if not line.get_label().startswith("_")}


def test_a_setup_keeps_its_colour_whichever_setups_a_figure_shows() -> None:
    names = ["vgg16 / frozen + linear", "resnet50 / fine-tuned", "dinov2_vits14 / frozen + mlp"]
    style = SetupStyle.of(names)
    first = _line_colours(roc_figure([_fake(names[0], 0), _fake(names[1], 1)], "t", style))
    second = _line_colours(reliability_figure([_fake(names[1], 2), _fake(names[2], 3)], "t", style))
    assert first[names[1]] == second[names[1]] == to_rgba(style.colour(names[1]))
    assert len({to_rgba(c) for c in style.colours.values()}) == 3


def test_roc_has_one_panel_per_class_and_its_legend_outside_the_axes() -> None:
    fig = roc_figure([_fake("a / fine-tuned", 0, classes=4), _fake("b / fine-tuned", 1, classes=4)], "t",
                     SetupStyle.of(["a / fine-tuned", "b / fine-tuned"]))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [f"c{k} vs rest" for k in range(4)]
    assert all(ax.get_legend() is None for ax in panels) and len(fig.legends) == 1
    _assert_outside(fig, fig.legends[0], panels)


def _assert_outside(fig: Figure, artist: object, axes: list) -> None:
    """The artist's box overlaps no axes' data area."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    box = artist.get_window_extent(renderer)
    for ax in axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()


def test_reliability_legend_is_beside_the_data() -> None:
    fig = reliability_figure([_fake("a / fine-tuned", 0), _fake("b / frozen + linear", 1)], "t",
                             SetupStyle.of(["a / fine-tuned", "b / frozen + linear"]))
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    _assert_outside(fig, fig.legends[0], fig.axes)


def test_confusion_titles_never_overlap_with_many_long_names() -> None:
    names = [f"hf-hub:timm/vit_base_patch14_dinov2.lvd142m_{k} / frozen + mlp, lr=0.001, image_size=224"
             for k in range(6)]
    fig = confusion_figure([_fake(n, k) for k, n in enumerate(names)], "t", SetupStyle.of(names))
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    assert len(titles) == 6
    for i, a in enumerate(titles):
        assert all(not a.overlaps(b) for b in titles[i + 1:])
        assert a.x0 >= 0 and a.x1 <= fig.bbox.width


def test_bars_show_only_the_setups_that_ran_with_their_table_names(report_dir: Path) -> None:
    agg = pd.read_csv(report_dir / "tables" / "aggregate.csv")
    style = SetupStyle.of(list(agg["setup"]))
    fig = metric_bars(agg, "three-class", "auroc", style)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == list(agg.loc[agg["task"] == "three-class", "setup"])  # one bar per setup that ran
    assert list(ax.get_yticks()) == sorted(ax.get_yticks(), reverse=True)  # the table's first row on top
    assert "n/a" not in {t.get_text() for t in ax.texts}
    assert [to_rgba(p.get_facecolor()) for p in ax.patches] == [to_rgba(style.colour(s)) for s in labels]


def test_roc_legend_reads_the_tables_auroc_for_four_classes(four_class_report: Path, four_class: Path) -> None:
    """Each setup's legend entry holds the main table's AUROC cell, and the value is the table's macro AUROC."""
    summary = summarise(collect_runs(four_class))
    chosen = drawn(summary.replicates, summary.setups)
    fig = roc_figure(chosen, "four-class", SetupStyle.of([d.setup for d in chosen]))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    rows = _md_rows(four_class_report / "tables" / "main_table.md")
    header = [h.strip() for h in (four_class_report / "tables" / "main_table.md").read_text().split("\n")[0]
              .strip("|").split("|")]
    cells = {f"{r[1]} / {r[2]}": r[header.index("AUROC")] for r in rows}
    assert len(cells) == len(legend) == 6
    assert legend == [f"{setup} (AUROC {cells[setup]})" for setup in cells]
    table = pd.read_csv(four_class_report / "tables" / "main_table.csv").set_index("setup")["auroc"]
    for d in chosen:
        assert d.auroc[0] == table[d.setup]
        if d.n_replicates == 1:  # the curves' own predictions give the table's number: macro one-vs-rest
            assert auroc(d.y, d.prob) == pytest.approx(table[d.setup], abs=1e-12)
    assert any(d.n_replicates == 2 for d in chosen)


def test_learning_curves_one_row_per_mode_with_the_best_epoch(four_class: Path) -> None:
    runs = collect_runs(four_class).runs
    fig, note = learning_curves(runs, SetupStyle.of(list(runs["setup"])))
    axes = np.array(fig.axes).reshape(-1, 3)
    assert [ax.get_title().split(":")[0] for ax in axes[:, 0]] == ["frozen probe heads", "fine-tuned"]
    assert "kNN" in note and "resnet18 / frozen + knn" in note
    first = runs.sort_values("seed").groupby("setup").head(1)
    for _, run in first[first["head"] != "knn"].iterrows():
        row = axes[0] if run["mode"] == "frozen" else axes[1]
        stars = [line for line in row[2].lines if line.get_marker() == "*"
                 and to_rgba(line.get_color()) == to_rgba(SetupStyle.of(list(runs["setup"])).colour(run["setup"]))]
        assert [float(x) for x in stars[0].get_xdata()] == [RunDir(Path(run["run_dir"])).metrics().best_epoch]
    epochs = {ax.get_xlim()[1] for ax in axes[1]}
    assert max(epochs) < 3  # the two-epoch fine-tunes have an axis of their own


def test_names_are_one_string_in_tables_and_legends(four_class_report: Path, four_class: Path) -> None:
    tables = four_class_report / "tables"
    main = {f"{r[1]} / {r[2]}" for r in _md_rows(tables / "main_table.md")}
    per_class = {r[1] for r in _md_rows(tables / "per_class.md")}
    pairwise = {name for r in _md_rows(tables / "pairwise.md") for name in r[1:3]}
    cost = {f"{r[1]} / {r[2]}" for r in _md_rows(tables / "cost.md")}
    summary = summarise(collect_runs(four_class))
    chosen = drawn(summary.replicates, summary.setups)
    reliability = {t.get_text().split(" (plug-in")[0] for t in
                   reliability_figure(chosen, "four-class", SetupStyle.of(list(main))).legends[0].get_texts()}
    assert main == per_class == pairwise == cost == reliability - {"perfect calibration"}
    assert "resnet18 / frozen + linear" in main and "resnet18 / fine-tuned" in main


def test_figures_draw_what_the_tables_estimated_from(study: Path, tmp_path: Path) -> None:
    """A seed left out of the tables (a fold missing) is not drawn: the figure takes the first replicate kept."""
    for run in (study / "cv").iterdir():
        if run.name != "resnet18-frozen-fold2-s0":
            shutil.copytree(run, tmp_path / run.name)
    summary = summarise(collect_runs(tmp_path))
    assert set(summary.excluded["seed"]) == {0}
    (chosen,) = drawn(summary.replicates, summary.setups)
    assert (chosen.replicate, chosen.pooled, len(chosen.y)) == ("1", True, summary.setups.iloc[0]["n_test"])
    reps = summary.replicates[0][1]
    np.testing.assert_array_equal(chosen.prob, reps.probs[0])  # seed 1's pooled out-of-fold predictions
    assert chosen.auroc[0] == summary.setups.iloc[0]["auroc"]


def test_a_bar_figure_title_stays_inside_the_figure_with_long_setup_names() -> None:
    """Long hub or folder names narrow the axes; the title must still fit the figure's width."""
    import pandas as pd

    from medtransfer.report.figures import metric_bars
    from medtransfer.report.style import SetupStyle

    setups = [f"hf:/a/very/long/local/folder/of/a/model/{k} / frozen + linear, pooling=cls" for k in range(3)]
    rows = pd.DataFrame({"task": "t", "setup": setups, "train_fraction": 1.0, "auroc": [0.6, 0.7, 0.8],
                         "auroc_low": [0.5, 0.6, 0.7], "auroc_high": [0.7, 0.8, 0.9],
                         "ci": "95% CI, 200-resample bootstrap over test images, 1 seed"})
    fig = metric_bars(rows, "t", "auroc", SetupStyle.of(setups))
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    title = fig.get_suptitle() and fig._suptitle.get_window_extent(renderer)
    assert title and 0 <= title.x0 and title.x1 <= fig.bbox.x1, (title, fig.bbox)
