"""Dry-run estimates: the arithmetic (image passes × measured seconds per image, plus overheads) under a fake
clock, and a tiny study whose measured run times fall inside the estimated ranges."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from medtransfer.config import TrainConfig
from medtransfer.study import cost
from medtransfer.study.cost import Calibration, Rate, calibrate, measurement_keys, run_work, time_calls

COUNTS = {"train": 100, "val": 20, "test": 30}


class FakeClock:
    """A clock that each call of `work()` advances by the next of the given durations."""

    def __init__(self, durations: list[float]) -> None:
        self.now, self.durations = 0.0, list(durations)

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.now += self.durations.pop(0)


def _cfg(mode: str, **values: object) -> TrainConfig:
    return TrainConfig(data="synthetic:n=60,size=16", backbone="resnet18", image_size=32, weights="none",
                       mode=mode, device="cpu", **values)


def test_timed_calls_skip_the_warm_up_and_give_the_fastest_and_slowest():
    clock = FakeClock([9.0, 2.0, 4.0, 3.0, 100.0])
    times = time_calls(clock.work, share=16.0, clock=clock)
    assert times == [2.0, 4.0, 3.0]  # the 9 s warm-up is not timed; the share is spent at 18 s: no 100 s call
    rate = Rate.of(times, units=32)
    assert (rate.low, rate.high) == (2.0 / 32, 4.0 / 32)


def test_fast_calls_are_timed_at_most_repeats_times():
    clock = FakeClock([0.1] * (cost.REPEATS + 5))
    assert len(time_calls(clock.work, share=60.0, clock=clock)) == cost.REPEATS


def test_timing_stops_once_its_share_is_spent_but_times_one_call():
    clock = FakeClock([5.0, 7.0, 1.0, 1.0])
    assert time_calls(clock.work, share=1.0, clock=clock) == [7.0]  # the warm-up alone spent the share


def test_a_run_is_its_passes_times_the_measured_rates_plus_build_and_overhead():
    cfg = _cfg("finetune", epochs=4, batch_size=16)
    work = run_work(cfg, COUNTS, extracts=False)
    # A training step per train image each epoch; a forward per val image each epoch, then val and test once.
    assert (work.train, work.infer, work.head_epochs) == (400, 4 * 20 + 20 + 30, 0)
    keys = measurement_keys(cfg, COUNTS)
    rates = {keys["train"]: Rate(0.01, 0.03), keys["infer"]: Rate(0.001, 0.002)}
    calibration = Calibration("test machine", rates=rates, builds={keys["model"]: 0.7})
    estimate = calibration.estimate(cfg, work, COUNTS)
    low, high = cost.OVERHEAD_SECONDS
    assert estimate.low == pytest.approx(400 * 0.01 + 130 * 0.001 + 0.7 + low)
    assert estimate.high == pytest.approx(cost.HIGH_MARGIN * (400 * 0.03 + 130 * 0.002) + 0.7 + high
                                          + cost.DATA_SECONDS_PER_IMAGE * 150)


def test_a_frozen_run_extracts_once_and_costs_its_head_epochs():
    cfg = _cfg("frozen", epochs=12)
    first, later = run_work(cfg, COUNTS, extracts=True), run_work(cfg, COUNTS, extracts=False)
    assert (first.infer, first.train, first.head_epochs) == (150, 0, 12)
    assert (later.infer, later.head_epochs) == (0, 12)
    knn = run_work(cfg.model_copy(update={"head": "knn"}), COUNTS, extracts=True)
    assert knn.head_epochs == 1  # kNN trains no epochs: its measured unit is the whole fit


def test_runs_alike_share_a_measurement_and_a_different_setting_adds_one(monkeypatch):
    """Two seeds of one fine-tune share the training measurement; freeze_blocks times another; nothing is built
    twice."""
    measured: list[tuple] = []
    monkeypatch.setattr(cost, "_measure", lambda key, job, backbone, share, clock: measured.append(key)
                        or Rate(1.0, 2.0))
    a, b = _cfg("finetune", epochs=1, seed=0), _cfg("finetune", epochs=1, seed=1)
    partial = _cfg("finetune", epochs=1, freeze_blocks=1)
    jobs = [(c, run_work(c, COUNTS, False), COUNTS) for c in (a, b, partial)]
    calibration = calibrate(jobs, budget=1.0)
    assert [k[0] for k in measured] == ["infer", "train", "train"]
    assert len(calibration.builds) == 1 and calibration.machine.endswith(f"{torch.get_num_threads()} threads")


# --- The estimate brackets reality on a tiny grid ---

TINY = """
name: bracket
datasets:
  syn: {data: "synthetic:n=120,size=16,classes=2,groups=60,seed=0"}
backbones:
  - {name: resnet18, image_size: 32}
  - {name: vit_tiny_patch16_224, image_size: 32}
modes:
  frozen: {heads: [linear], epochs: 10}
  finetune: {epochs: 2, batch_size: 16, lr: 0.001}
seeds: [0]
train: {weights: none, bootstrap: 100, workers: 0, device: cpu}
"""
# Measured against estimated, both on this shared 2-core machine: other processes can slow either one down, so a
# run must land within this factor of its range, not strictly inside it.
TOLERANCE = 3.0


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the calibration and the runs alike: on a shared 2-core machine two threads' OpenMP
    barriers make timings swing many-fold with the neighbours' load, one thread only by their share of the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_each_run_takes_a_time_within_its_estimated_range(tmp_path: Path, one_thread: None, capsys) -> None:
    from medtransfer.progress import Reporter
    from medtransfer.study.run import run_study

    study = tmp_path / "tiny.yaml"
    study.write_text(TINY.replace("device: cpu}", f"device: cpu, cache_dir: {tmp_path / 'cache'}}}"))
    plan = run_study(study, tmp_path / "out", dry_run=True, reporter=Reporter(quiet=True)).plan
    printed = capsys.readouterr().out
    assert "1 threads" in printed and "remaining: 4 run(s)" in printed
    outcome = run_study(study, tmp_path / "out")
    assert len(plan.estimates) == len(outcome.specs) == 4
    for spec in outcome.specs:
        estimate = plan.estimates[spec.run_id]
        seconds = json.loads((Path(spec.config.out) / "metrics.json").read_text())["timing"]["total_seconds"]
        assert estimate.low / TOLERANCE <= seconds <= estimate.high * TOLERANCE, (spec.label, estimate, seconds)
