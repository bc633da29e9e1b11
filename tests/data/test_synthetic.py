"""`synthetic:` data: option parsing, determinism, balance, grouping, and a class signal that is learnable."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from medtransfer.data.synthetic import SyntheticSpec, load_synthetic
from medtransfer.errors import UserError


def _all_pixels(table) -> np.ndarray:
    return np.stack([table.pixels(i) for i in range(len(table))])


def test_parse_reads_every_option():
    spec = SyntheticSpec.parse("synthetic:n=90,size=20,classes=3,groups=30,channels=3,seed=7,noise=0.1")
    assert spec == SyntheticSpec(n=90, size=20, classes=3, groups=30, channels=3, seed=7, noise=0.1)


@pytest.mark.parametrize("text", ["synthetic", "synthetic:"])
def test_parse_without_options_gives_defaults(text):
    assert SyntheticSpec.parse(text) == SyntheticSpec()


def test_parse_keeps_unnamed_options_at_their_defaults():
    spec = SyntheticSpec.parse("synthetic:seed=3")
    assert spec.seed == 3
    assert spec.n == SyntheticSpec().n and spec.size == SyntheticSpec().size


@pytest.mark.parametrize("text, fragment", [
    ("synthetic:colour=3", "unknown synthetic option"),
    ("synthetic:n=many", "not a number"),
    ("synthetic:n=1.5", "not a number"),
    ("synthetic:size=", "not a number"),
    ("synthetic:classes=1", "classes >= 2"),
    ("synthetic:n=5,classes=3", "n >= 2*classes"),
    ("synthetic:size=4", "size >= 8"),
    ("synthetic:channels=2", "channels 1 or 3"),
])
def test_bad_options_raise_user_error(text, fragment):
    with pytest.raises(UserError) as info:
        SyntheticSpec.parse(text)
    assert fragment in info.value.line()
    assert text in info.value.line()


@pytest.mark.parametrize("text", [
    "synthetic:n=20,size=8,seed=-1",     # np.random.default_rng rejects negative seeds at the first pixel read
    "synthetic:n=20,size=8,noise=-0.5",  # a negative noise scale fails at the first pixel read
    "synthetic:n=20,size=8,groups=-4",   # negative patient ids
    "synthetic:n=20,size=8,groups=1",    # one patient cannot carry two classes: class1 would have no samples
])
def test_options_that_cannot_make_a_valid_set_are_rejected_up_front(text):
    with pytest.raises(UserError):
        load_synthetic(text)


@pytest.mark.parametrize("channels", [1, 3])
def test_images_have_the_asked_size_and_channels(channels):
    table = load_synthetic(f"synthetic:n=6,size=12,channels={channels}")
    pixels = table.pixels(0)
    assert pixels.dtype == np.uint8
    assert pixels.shape == ((12, 12) if channels == 1 else (12, 12, 3))


def test_same_spec_gives_identical_pixels_and_fingerprint():
    text = "synthetic:n=24,size=16,classes=3,groups=6,seed=5"
    a, b = load_synthetic(text), load_synthetic(text)
    np.testing.assert_array_equal(_all_pixels(a), _all_pixels(b))
    assert a.frame[["sample_id", "label", "group"]].equals(b.frame[["sample_id", "label", "group"]])
    assert a.fingerprint == b.fingerprint
    # reading in another order does not change a sample (pixels depend on (seed, index) only)
    np.testing.assert_array_equal(a.pixels(17), load_synthetic(text).pixels(17))


def test_different_seed_gives_different_pixels_and_fingerprint():
    a = load_synthetic("synthetic:n=10,size=16,seed=0")
    b = load_synthetic("synthetic:n=10,size=16,seed=1")
    pa, pb = _all_pixels(a), _all_pixels(b)
    assert all(not np.array_equal(x, y) for x, y in zip(pa, pb))
    assert a.fingerprint != b.fingerprint


def test_samples_differ_from_each_other():
    pixels = _all_pixels(load_synthetic("synthetic:n=12,size=16"))
    flat = pixels.reshape(len(pixels), -1)
    assert len({row.tobytes() for row in flat}) == len(flat)
    assert flat.std() > 5  # not a blank image set


@pytest.mark.parametrize("text", ["synthetic:n=100,classes=2", "synthetic:n=101,classes=3",
                                  "synthetic:n=600,classes=3,groups=120", "synthetic:n=80,classes=4,groups=20"])
def test_classes_are_balanced(text):
    table = load_synthetic(text)
    counts = table.frame["label"].value_counts()
    assert set(counts.index) == set(table.classes)
    assert counts.max() - counts.min() <= 1


def test_groups_are_consistent_and_ungrouped_has_none():
    table = load_synthetic("synthetic:n=90,size=8,classes=3,groups=15")
    assert table.has_groups
    assert table.frame["group"].nunique() == 15
    assert (table.frame.groupby("group")["label"].nunique() == 1).all()
    assert (table.frame.groupby("group").size() == 90 // 15).all()
    assert not load_synthetic("synthetic:n=20,size=8").has_groups


def test_patient_effect_is_shared_within_a_group():
    """Images of one patient share brightness: their mean differs less than across patients."""
    table = load_synthetic("synthetic:n=200,size=16,classes=2,groups=20,seed=2")
    means = _all_pixels(table).reshape(len(table), -1).mean(axis=1)
    per_group = table.frame.assign(mean=means).groupby("group")["mean"]
    assert per_group.std().mean() < 0.5 * per_group.mean().std()


def test_source_and_class_names():
    table = load_synthetic("synthetic:n=12,classes=3")
    assert table.source == "synthetic:n=12,classes=3"
    assert table.classes == ["class0", "class1", "class2"]
    assert table.frame["split"].isna().all()


def test_class_signal_is_learnable_from_raw_pixels():
    table = load_synthetic("synthetic:n=400,size=32,classes=2,seed=0")
    x = _all_pixels(table).reshape(len(table), -1).astype(np.float32) / 255.0
    x -= x.mean(axis=1, keepdims=True)
    y = table.frame["target"].to_numpy()
    order = np.random.default_rng(0).permutation(len(y))
    train, held_out = order[:300], order[300:]
    model = LogisticRegression(C=0.1, max_iter=2000).fit(x[train], y[train])
    accuracy = model.score(x[held_out], y[held_out])
    chance = np.bincount(y[held_out]).max() / len(held_out)
    assert accuracy > 0.7
    assert accuracy > chance + 0.15
