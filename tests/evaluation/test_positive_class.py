"""--positive-class: class index 1 is the positive class of every binary metric, so choosing the other class swaps
the operating-point metrics and keeps AUROC; a whole run's numbers follow from its own predictions by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score

from medtransfer.config import parse_config
from medtransfer.evaluation.metrics import compute_metrics, confusion
from medtransfer.runner import train

SWAPPED = {"sensitivity": "specificity", "specificity": "sensitivity", "ppv": "npv", "npv": "ppv"}


def test_reversing_the_classes_swaps_the_operating_point_and_keeps_auroc():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    p1 = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, 80), 0.01, 0.99)  # no exact 0.5: argmax has no ties
    prob = np.column_stack([1 - p1, p1])
    natural, reversed_ = compute_metrics(y, prob), compute_metrics(1 - y, prob[:, ::-1])
    assert reversed_["auroc"] == pytest.approx(natural["auroc"], abs=1e-12)
    assert reversed_["accuracy"] == natural["accuracy"]
    for name, other in SWAPPED.items():
        assert reversed_[name] == pytest.approx(natural[other], abs=1e-12)
    assert natural["sensitivity"] != pytest.approx(natural["specificity"])  # the swap is visible
    assert np.array_equal(np.flip(confusion(1 - y, prob[:, ::-1])), confusion(y, prob))


def _run(tmp_path, name: str, **values):
    cfg = parse_config({"data": "synthetic:n=60,size=16", "backbone": "resnet18", "weights": "none",
                        "image_size": 16, "head": "knn", "bootstrap": 100, "workers": 0, "device": "cpu",
                        "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / name), **values})
    return train(cfg)


def test_a_run_with_the_first_class_positive_matches_its_predictions_by_hand(tmp_path):
    """A kNN probe treats classes alike, so the two orders give the same probabilities (the feature cache shared,
    since class order is no part of its key); the metrics then follow from predictions.csv by hand."""
    natural, flipped = _run(tmp_path, "natural"), _run(tmp_path, "flipped", positive_class="class0")
    assert flipped.metrics.timing["cache_hit"]
    assert natural.metrics.classes == ["class0", "class1"] and flipped.metrics.classes == ["class1", "class0"]
    assert natural.metrics.threshold.positive_class == "class1"
    assert flipped.metrics.threshold.positive_class == "class0"
    test = flipped.run_dir.predictions("test")
    assert list(test.filter(like="prob_").columns) == ["prob_class1", "prob_class0"]
    same = natural.run_dir.predictions("test")
    np.testing.assert_allclose(test[["prob_class0", "prob_class1"]], same[["prob_class0", "prob_class1"]], atol=1e-6)

    positive, score = (test["label"] == "class0").to_numpy(), test["prob_class0"].to_numpy()
    called = score >= flipped.metrics.threshold.value  # the val threshold's rule: positive when p >= t
    assert ((test["predicted_at_threshold"] == "class0") == called).all()  # the calls the file records
    m = flipped.metrics.test
    assert m["sensitivity"].value == pytest.approx(called[positive].mean())
    assert m["specificity"].value == pytest.approx((~called[~positive]).mean())
    assert m["ppv"].value == pytest.approx(positive[called].mean())
    assert m["npv"].value == pytest.approx((~positive[~called]).mean())
    assert m["auroc"].value == pytest.approx(roc_auc_score(positive, score))
    assert m["auroc"].value == pytest.approx(natural.metrics.test["auroc"].value, abs=1e-12)
    order = ["class1", "class0"]
    by_hand = confusion_matrix(test["label"], test["predicted"], labels=order)
    assert flipped.metrics.confusion["test"] == by_hand.tolist()
    assert np.array_equal(np.flip(natural.metrics.confusion["test"]), by_hand)
