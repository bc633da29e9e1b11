"""The terminal results table: each metric named and scaled as the metric registry declares it."""

from __future__ import annotations

import io

from rich.console import Console

from medtransfer.result_tables import NOT_FINISHED, finished_records, metrics_table, results_table
from medtransfer.config import TrainConfig
from medtransfer.evaluation.metric_registry import METRIC_REGISTRY
from medtransfer.rundir import RunMetrics, RunWriter
from medtransfer.study.grid import RunSpec


def record(values: dict[str, float], best_epoch: int = 1) -> RunMetrics:
    block = {name: {"value": v, "low": v - 0.01, "high": v + 0.01} for name, v in values.items()}
    return RunMetrics.build({"val": block, "test": block, "confusion": {"test": [[1, 0], [0, 1]]},
                             "bootstrap": {"n": 200, "level": 0.95, "unit": "group", "seed": 0},
                             "n_train": 10, "n_val": 4, "n_test": 6, "classes": ["a", "b"], "best_epoch": best_epoch,
                             "notes": [], "timing": {}})


def printed(metrics: RunMetrics) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(metrics_table(metrics))
    return out.getvalue()


def test_shares_print_in_percent_and_scores_plain():
    text = printed(record({"auroc": 0.8766, "brier": 0.1234, "calibration_slope": 1.25}))
    assert "87.7 [86.7, 88.7]" in text
    assert "0.123 [0.113, 0.133]" in text and "12.3" not in text
    assert "1.250 [1.240, 1.260]" in text and "125.0" not in text
    assert "200 resamples" in text and "over groups" in text and "(n=4)" in text and "(n=6)" in text


def test_rows_carry_the_registry_labels_in_registry_order():
    names = ("auroc", "brier", "kappa", "accuracy")
    text = printed(record(dict.fromkeys(names, 0.5)))
    labels = [METRIC_REGISTRY.get(n).label for n in ("accuracy", "auroc", "kappa", "brier")]  # METRICS order
    positions = [text.find(label) for label in labels]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
    assert "sensitivity" not in text.lower()  # absent metrics get no row


def spec(tmp_path, name: str, auroc: float | None, best: int = 7, **settings) -> RunSpec:
    """A study run with a finished run dir holding `auroc` (and accuracy 0.5), or none at all when auroc is None."""
    cfg = TrainConfig(data="synthetic:", backbone="resnet18", out=str(tmp_path / name), **settings)
    if auroc is not None:
        with RunWriter(tmp_path / name) as writer:
            writer.write_metrics(record({"auroc": auroc, "accuracy": 0.5}, best))
            writer.commit()
    return RunSpec(name, cfg)


def rows(table_text: str) -> list[list[str]]:
    """The header and body rows of a printed rich table, as cell texts."""
    lines = [line.replace("┃", "│") for line in table_text.splitlines() if line and line[0] in "│┃"]
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in lines]


def shown(specs: list[RunSpec]) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(results_table(specs, finished_records(specs), "study [x]"))
    return out.getvalue()


def test_results_table_has_a_row_per_run_and_shows_unfinished_ones(tmp_path):
    specs = [spec(tmp_path, "a", 0.8123, mode="frozen"), spec(tmp_path, "b", None, mode="finetune"),
             spec(tmp_path, "c", 0.6, best=20, mode="frozen", head="knn")]
    text = shown(specs)
    assert "study [x]: test split" in text and "over groups" in text  # the title is text, not markup
    header, *body = rows(text)
    assert header == ["backbone", "mode", "test AUROC", "test Accuracy", "best epoch"]
    # Modes named as the report names them, the probe head included.
    assert body[0] == ["resnet18", "frozen + linear", "81.2 [80.2, 82.2]", "50.0 [49.0, 51.0]", "7"]
    assert body[1] == ["resnet18", "fine-tuned", NOT_FINISHED, NOT_FINISHED, "–"]
    assert body[2][1] == "frozen + knn" and body[2][-1] == "k 20"  # a kNN probe's best "epoch" is its k


def test_results_table_adds_task_and_seed_columns_only_where_they_vary(tmp_path):
    one = shown([spec(tmp_path, "a", 0.7), spec(tmp_path, "b", 0.6)])
    assert rows(one)[0] == ["backbone", "mode", "test AUROC", "test Accuracy", "best epoch"]
    several = shown([spec(tmp_path, "c", 0.7, task="chest", seed=0), spec(tmp_path, "d", 0.6, task="skin", seed=1)])
    header, first, second = rows(several)
    assert header[:3] == ["task", "backbone", "mode"] and "seed" in header
    assert first[0] == "chest" and second[0] == "skin" and second[header.index("seed")] == "1"


def test_two_setups_of_one_backbone_and_mode_are_told_apart_by_what_differs(tmp_path):
    """Pooling or weights differing within a mode get a settings column; a mode's own defaults (lr) do not."""
    text = shown([spec(tmp_path, "a", 0.7, pooling="cls_mean"), spec(tmp_path, "b", 0.6, pooling="cls"),
                  spec(tmp_path, "c", 0.6, mode="finetune")])
    header, *body = rows(text)
    assert header[:3] == ["backbone", "mode", "settings"]
    assert [row[2] for row in body] == ["pooling=cls_mean", "pooling=cls", "pooling=auto"]
    assert "lr=" not in text
