"""Subgroups: labelling rows, the joint bootstrap, worst and gap, and the gap's coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from evaluation.test_generalisation import clustered_classifier, lean_accuracy
from threadpoolctl import threadpool_limits

from medtransfer.data.subgroup_spec import SubgroupColumn
from medtransfer.evaluation import subgroups
from medtransfer.evaluation.bootstrap import BootstrapSpec, percentile_interval, resample_counts
from medtransfer.evaluation.generalisation import ScoredSet
from medtransfer.evaluation.metrics import compute_metrics
from medtransfer.evaluation.resampled import metrics_for_counts
from medtransfer.evaluation.seeds import combine_seeds
from medtransfer.evaluation.subgroups import subgroup_analysis, subgroup_labels


def test_category_labels_as_they_are_and_missing() -> None:
    values = pd.Series(["F", "M", "", None, " M ", np.nan], dtype=object)
    assert subgroup_labels(values, SubgroupColumn("sex")).tolist() == ["F", "M", "missing", "missing", "M",
                                                                        "missing"]
    # a numeric column read as floats because of a blank: its categories are the integers written
    assert subgroup_labels(pd.Series([1.0, 2.0, np.nan]), SubgroupColumn("grade")).tolist() == ["1", "2", "missing"]


def test_bin_labels_half_open_last_closed_outside_and_missing() -> None:
    values = pd.Series(["0", "49.9", "50", "120", "120.5", "-1", "", None, " 7 "], dtype=object)
    labels = subgroup_labels(values, SubgroupColumn("age", (0.0, 50.0, 120.0)))
    assert labels.tolist() == ["0–50", "0–50", "50–120", "50–120", "outside bins", "outside bins", "missing",
                               "missing", "0–50"]
    assert subgroup_labels(pd.Series([18.5, 30.0]), SubgroupColumn("bmi", (0.0, 18.5, 25.0, float("inf")))).tolist() \
        == ["18.5–25", "25–inf"]


def test_a_word_in_a_binned_column_is_refused() -> None:
    with pytest.raises(ValueError, match="'age' has bins but non-numeric values, e.g. \\['old'\\]"):
        subgroup_labels(pd.Series(["12", "old", ""]), SubgroupColumn("age", (0.0, 50.0)))


def constructed(n_per: int = 40) -> tuple[ScoredSet, np.ndarray]:
    """Three subgroups with accuracy 1, 0.5 and 0.75 (A, B, C), one image per case, plus a tiny subgroup D."""
    rng = np.random.default_rng(0)
    labels = np.repeat(["A", "B", "C", "D"], [n_per, n_per, n_per, 5]).astype(object)
    share = {"A": 1.0, "B": 0.5, "C": 0.75, "D": 0.0}
    y = rng.integers(0, 2, len(labels))
    correct = np.concatenate([np.arange(n_per if s != "D" else 5) < share[s] * (n_per if s != "D" else 5)
                              for s in "ABCD"])
    pred = np.where(correct, y, 1 - y)
    p1 = np.where(pred == 1, 0.6 + 0.3 * rng.random(len(y)), 0.4 - 0.3 * rng.random(len(y)))
    return ScoredSet("test", y, [np.c_[1 - p1, p1]]), labels


def test_worst_and_gap_are_picked_on_the_point_values() -> None:
    scored, labels = constructed()
    out = subgroup_analysis(scored, labels, BootstrapSpec(n=200, seed=1), 10)
    assert list(out["subgroups"]) == ["A", "B", "C"] and out["too_few"] == {"D": 5}
    assert [out["subgroups"][s]["metrics"]["accuracy"]["value"] for s in "ABC"] == [1.0, 0.5, 0.75]
    assert out["worst"]["accuracy"] == {"subgroup": "B", **out["subgroups"]["B"]["metrics"]["accuracy"]}
    brier = {s: out["subgroups"][s]["metrics"]["brier"]["value"] for s in "ABC"}
    assert out["worst"]["brier"]["subgroup"] == max(brier, key=brier.get)  # lower is better: the highest is worst
    assert "calibration_slope" not in out["worst"] and "calibration_slope" in out["gap"]  # no direction
    gap = out["gap"]["accuracy"]
    assert (gap["highest"], gap["lowest"], gap["value"]) == ("A", "B", 0.5)
    assert gap["low"] <= 0.5 <= gap["high"]
    assert "with 3 subgroups, choosing the pair on the data biases the gap away from 0" in out["gap_interval"]
    assert out["interval"] == ("95% CI, percentile bootstrap over test images, resampled jointly over the whole "
                               "test split, 1 seed")
    assert (out["unit"], out["min_cases"]) == ("sample", 10)


def test_a_subgroup_without_one_class_has_no_value_for_the_metrics_that_need_every_class() -> None:
    rng = np.random.default_rng(5)
    y, prob, _ = clustered_classifier(rng, 150, 0.8, max_images=1)
    labels = np.where(y == 1, rng.choice(["x", "y"], len(y)), "x").astype(object)  # subgroup y: positives only
    out = subgroup_analysis(ScoredSet("test", y, [prob]), labels, BootstrapSpec(n=100, seed=2), 10)
    x, only = out["subgroups"]["x"]["metrics"], out["subgroups"]["y"]["metrics"]
    assert np.isfinite([x["f1_macro"]["value"], x["kappa"]["low"], x["ppv"]["high"]]).all()
    assert np.isnan([only["f1_macro"]["value"], only["kappa"]["low"], only["npv"]["high"], only["ppv"]["value"]]).all()
    assert np.isfinite([only["accuracy"]["value"], only["sensitivity"]["low"]]).all()
    assert "f1_macro" not in out["gap"] and "kappa" not in out["worst"]  # nothing to compare the one subgroup with
    assert out["gap"]["accuracy"]["lowest"] in ("x", "y")
    assert "y lack(s) one of the split's classes" in out["interval"]


def test_intervals_come_from_one_joint_resample_restricted_to_each_subgroup() -> None:
    rng = np.random.default_rng(3)
    y, prob, group = clustered_classifier(rng, 120, 0.8)
    labels = np.where(rng.random(len(y)) < 0.5, "x", "y").astype(object)  # image-level: cases span both
    spec = BootstrapSpec(n=200, seed=4)
    out = subgroup_analysis(ScoredSet("test", y, [prob], group, [0.3]), labels, spec, 20,
                            names=("accuracy", "auroc", "sensitivity"))
    counts = resample_counts(len(y), group, spec.n, np.random.default_rng(spec.seed))
    draws = {}
    for s in "xy":
        mask = labels == s
        draws[s] = metrics_for_counts(y[mask], prob[mask], counts[:, mask], threshold=0.3,
                                      names=("accuracy", "auroc", "sensitivity"))
        point = compute_metrics(y[mask], prob[mask], threshold=0.3)
        assert out["subgroups"][s]["n"] == mask.sum()
        assert out["subgroups"][s]["n_cases"] == len(np.unique(group[mask]))  # a case in both counts in each
        for m in ("accuracy", "auroc", "sensitivity"):
            ci = out["subgroups"][s]["metrics"][m]
            assert ci["value"] == pytest.approx(point[m])
            assert (ci["low"], ci["high"]) == pytest.approx(percentile_interval(draws[s][m], 0.95))
    assert sum(out["subgroups"][s]["n_cases"] for s in "xy") > 120
    gap = out["gap"]["auroc"]
    hi, lo = gap["highest"], gap["lowest"]
    assert (gap["low"], gap["high"]) == pytest.approx(percentile_interval(draws[hi]["auroc"] - draws[lo]["auroc"],
                                                                          0.95))
    assert "over test patients" in out["interval"] and "biases" not in out["gap_interval"]


def test_several_seeds_combine_per_subgroup_and_average_inside_the_gap() -> None:
    rng = np.random.default_rng(5)
    y, prob_a, group = clustered_classifier(rng, 100, 0.8)
    prob_b = np.clip(prob_a + rng.normal(0, 0.1, prob_a.shape), 0.01, None)
    prob_b /= prob_b.sum(axis=1, keepdims=True)
    labels = np.where(group % 2 == 0, "even", "odd").astype(object)
    spec = BootstrapSpec(n=150, seed=6)
    out = subgroup_analysis(ScoredSet("test", y, [prob_a, prob_b], group), labels, spec, 10, names=("accuracy",))
    counts = resample_counts(len(y), group, spec.n, np.random.default_rng(spec.seed))
    mean_draws = {}
    for s in ("even", "odd"):
        mask = labels == s
        draws = [metrics_for_counts(y[mask], p[mask], counts[:, mask], names=("accuracy",)) for p in (prob_a, prob_b)]
        points = [{"accuracy": compute_metrics(y[mask], p[mask])["accuracy"]} for p in (prob_a, prob_b)]
        want = combine_seeds(points, draws, spec)["accuracy"]
        assert out["subgroups"][s]["metrics"]["accuracy"] == pytest.approx(want)
        mean_draws[s] = (draws[0]["accuracy"] + draws[1]["accuracy"]) / 2
    gap = out["gap"]["accuracy"]
    want = percentile_interval(mean_draws[gap["highest"]] - mean_draws[gap["lowest"]], 0.95)
    assert (gap["low"], gap["high"]) == pytest.approx(want)
    assert "between 2 seeds" in out["interval"] and "seed mean inside each resample" in out["gap_interval"]


def test_fewer_than_two_analysable_subgroups_have_no_worst_or_gap() -> None:
    scored, labels = constructed()
    out = subgroup_analysis(scored, np.where(labels == "A", "A", "rest").astype(object), BootstrapSpec(n=50), 100)
    assert out["subgroups"] == {} and out["too_few"] == {"A": 40, "rest": 85}
    assert out["worst"] == {} and out["gap"] == {}
    one = subgroup_analysis(scored, np.where(labels == "A", "A", "rest").astype(object), BootstrapSpec(n=50), 60)
    assert list(one["subgroups"]) == ["rest"] and one["too_few"] == {"A": 40} and one["gap"] == {}


def test_cases_are_groups_and_labels_are_ordered_bins_first() -> None:
    y = np.tile([0, 1], 30)
    prob = np.tile([[0.8, 0.2], [0.3, 0.7]], (30, 1))
    group = np.repeat(np.arange(20), 3)  # 20 cases of 3 images
    labels = np.repeat(["50–120", "0–50", "missing", "5–10"], 15).astype(object)
    out = subgroup_analysis(ScoredSet("test", y, [prob], group), labels, BootstrapSpec(n=20), 6, names=("accuracy",))
    assert out["too_few"] == {"0–50": 5, "5–10": 5, "50–120": 5, "missing": 5}  # cases, not images (15 each)
    labels = np.repeat(["50–120", "0–50", "missing", "5–10"], [15, 15, 12, 18]).astype(object)
    out = subgroup_analysis(ScoredSet("test", y, [prob], group), labels, BootstrapSpec(n=20), 4, names=("accuracy",))
    assert list(out["subgroups"]) == ["0–50", "5–10", "50–120", "missing"]
    assert out["subgroups"]["missing"]["n_cases"] == 4 and out["subgroups"]["5–10"]["n_cases"] == 6
    assert out["too_few"] == {} and out["unit"] == "group"


def test_same_seed_same_result_different_seed_different() -> None:
    scored, labels = constructed()
    a = subgroup_analysis(scored, labels, BootstrapSpec(n=100, seed=2), 10, names=("accuracy", "auroc"))
    assert a == subgroup_analysis(scored, labels, BootstrapSpec(n=100, seed=2), 10, names=("accuracy", "auroc"))
    c = subgroup_analysis(scored, labels, BootstrapSpec(n=100, seed=3), 10, names=("accuracy", "auroc"))
    assert a["gap"]["accuracy"]["value"] == c["gap"]["accuracy"]["value"]
    assert a["gap"]["accuracy"]["low"] != c["gap"]["accuracy"]["low"]


def test_a_subgroup_that_drew_no_case_is_undefined_on_that_resample() -> None:
    y = np.array([0, 1] * 10 + [1])
    prob = np.where(y[:, None] == np.arange(2), 0.9, 0.1)
    labels = np.array(["big"] * 20 + ["one"], dtype=object)  # "one" is missed by about a third of the resamples
    out = subgroup_analysis(ScoredSet("test", y, [prob]), labels, BootstrapSpec(n=300), 1, names=("accuracy",))
    assert out["subgroups"]["one"]["metrics"]["accuracy"] == {"value": 1.0, "low": 1.0, "high": 1.0}  # never a 0
    assert out["gap"]["accuracy"]["value"] == 0.0 and out["gap"]["accuracy"]["low"] == 0.0


def test_labels_must_match_the_samples() -> None:
    scored, labels = constructed()
    with pytest.raises(ValueError, match="one subgroup label per sample"):
        subgroup_analysis(scored, labels[:-1], BootstrapSpec(n=10), 5)


def coverages(rng: np.random.Generator, accuracy: dict[str, float], reps: int) -> dict[str, float]:
    """Share of simulated test splits whose gap CI covers the true gap of the pair it picked, and whose subgroup
    CIs cover their subgroup's accuracy.

    150 cases of 1-3 images with a shared effect in each subgroup; 500 resamples per interval.
    """
    covered = dict.fromkeys(["gap", "a", "b"], 0)
    for rep in range(reps):
        y_a, prob_a, group_a = clustered_classifier(rng, 150, accuracy["a"])
        y_b, prob_b, group_b = clustered_classifier(rng, 150, accuracy["b"])
        scored = ScoredSet("test", np.r_[y_a, y_b], [np.r_[prob_a, prob_b]], np.r_[group_a, group_b + 150])
        labels = np.repeat(np.array(["a", "b"], dtype=object), [len(y_a), len(y_b)])
        out = subgroup_analysis(scored, labels, BootstrapSpec(n=500, seed=rep), 20, names=("accuracy",))
        gap = out["gap"]["accuracy"]
        covered["gap"] += gap["low"] <= accuracy[gap["highest"]] - accuracy[gap["lowest"]] <= gap["high"]
        for s in "ab":
            ci = out["subgroups"][s]["metrics"]["accuracy"]
            covered[s] += ci["low"] <= accuracy[s] <= ci["high"]
    return {key: n / reps for key, n in covered.items()}


@pytest.mark.parametrize("stream, accuracy", [(0, {"a": 0.85, "b": 0.7}), (1, {"a": 0.8, "b": 0.8})],
                         ids=["gap 0.15", "gap 0"])
def test_coverage_of_the_subgroup_intervals(monkeypatch, stream, accuracy) -> None:
    """The joint-bootstrap gap CI covers the true gap, and each subgroup's CI its accuracy, in 93-97% of 1000
    simulated splits (binomial SD 0.69 points).

    At gap 0 with two subgroups the interval of max - min covers 0 when |difference| < its 97.5% point: 95% too.
    """
    monkeypatch.setattr(subgroups, "compute_metrics", lean_accuracy)
    with threadpool_limits(1):
        coverage = coverages(np.random.default_rng([20261204, stream]), accuracy, 1000)
    print(f"subgroup coverage {accuracy}:", {key: f"{100 * v:.1f}%" for key, v in coverage.items()})
    assert all(0.93 <= v <= 0.97 for v in coverage.values()), coverage
