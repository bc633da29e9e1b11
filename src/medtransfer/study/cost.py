"""Dry-run cost, measured on the machine at hand: every distinct backbone of the grid is built with random weights
(speed does not depend on their values, and nothing is downloaded) on the runs' device, and a few batches are timed
through the run's own code: the extraction forward for frozen runs, a full training step (forward, backward,
optimiser step, with the run's freeze_blocks / LoRA / checkpointing) for fine-tuning, and the probe head on random
features. A run's time is its image passes ÷ that throughput plus a fixed overhead, as a low–high range."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from medtransfer.config import TrainConfig, from_config
from medtransfer.engine.device import pick_device
from medtransfer.engine.features import extract
from medtransfer.engine.finetune import Classifier, FinetuneSettings, make_step, train_epoch
from medtransfer.engine.optim import TrainingLoop
from medtransfer.engine.pipeline import InputPipeline
from medtransfer.engine.probes import make_probe, probe_name
from medtransfer.fitting import adapt as adapt_like_the_run
from medtransfer.fitting import extract_batch
from medtransfer.models.backbone import Backbone, build_backbone
from medtransfer.provenance import device_name
from medtransfer.study.executors import cache_group
from medtransfer.study.grid import RunSpec

Clock = Callable[[], float]
# Batches larger than this (frozen extraction's) are timed at this size and scaled per image: a CPU is barely faster
# per image at a larger batch (this errs long, if at all); a GPU is, so it times batches nearer its own.
TIMED_BATCH = {"cpu": 32, "cuda": 256}
# Timed batches per measurement, after one warm-up batch, while its share of the budget lasts (at least one): on a
# shared machine successive identical batches were seen to take 0.5–8 s, so a few would miss the fast ones.
REPEATS = 10
BUDGET_SECONDS = 20.0  # what the whole calibration aims at: slower backbones get fewer timed batches (at least one)
# Over the slowest timed batch: data loading, per-epoch bookkeeping and other processes, which a few batches miss.
HIGH_MARGIN = 1.5
OVERHEAD_SECONDS = (0.5, 3.0)  # per run, not measured: loading the table, evaluation and its bootstrap, writing
DATA_SECONDS_PER_IMAGE = 0.003  # high end only: hashing and decoding images (cached after a table's first run)
HEAD_EPOCHS = 3  # epochs per timed fit of a probe head
N_CLASSES = 2  # the head's width barely moves the time of a backbone


@dataclass(frozen=True)
class Rate:
    """Measured seconds per unit (an image, or a head epoch): from the fastest and the slowest timed batch."""

    low: float
    high: float

    @classmethod
    def of(cls, seconds: list[float], units: int = 1) -> Rate:
        """The rate from each timed batch's seconds for `units` images (or epochs) per batch."""
        return cls(min(seconds) / units, max(seconds) / units)


@dataclass(frozen=True)
class Estimate:
    """A run's time as a low–high range in seconds."""

    low: float
    high: float

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.low + other.low, self.high + other.high)


@dataclass(frozen=True)
class Work:
    """What a run computes: images through the backbone forward only, images through a training step, head epochs."""

    infer: int
    train: int
    head_epochs: int
    images: int  # the table's size, for the unmeasured data-loading allowance


@dataclass
class Calibration:
    """What was measured on this machine: rates by measurement key, build seconds by model, and the cost of it all."""

    machine: str
    seconds: float = 0.0
    rates: dict[tuple, Rate] = field(default_factory=dict)
    builds: dict[tuple, float] = field(default_factory=dict)

    def estimate(self, cfg: TrainConfig, work: Work, counts: dict[str, int]) -> Estimate:
        """The run's time from its work and the measured rates, plus the build and the fixed overhead."""
        keys = measurement_keys(cfg, counts)
        measured = [(keys["infer"], work.infer), (keys["train"], work.train), (keys["head"], work.head_epochs)]
        low = sum(self.rates[k].low * n for k, n in measured if n)
        high = sum(self.rates[k].high * n for k, n in measured if n)
        fixed = self.builds[keys["model"]]
        return Estimate(low + fixed + OVERHEAD_SECONDS[0],
                        HIGH_MARGIN * high + fixed + OVERHEAD_SECONDS[1] + DATA_SECONDS_PER_IMAGE * work.images)


def run_work(cfg: TrainConfig, counts: dict[str, int], extracts: bool) -> Work:
    """Image passes of one run: frozen = one forward over every image (when it fills the cache) and the head's
    epochs; finetune = a training step per train image and a forward per val image each epoch, then val and test."""
    images = sum(counts.values())
    if cfg.mode == "frozen":
        return Work(images if extracts else 0, 0, head_epochs(cfg), images)
    epochs = cfg.epochs or 1  # early stopping can only shorten it
    return Work(epochs * counts["val"] + counts["val"] + counts["test"], epochs * counts["train"], 0, images)


def _batch(cfg: TrainConfig, device: torch.device) -> int:
    """The batch the run's backbone passes use (frozen extraction as fitting.py picks it), capped for timing."""
    if cfg.mode == "frozen":
        run = extract_batch(cfg, device)
    else:
        run = cfg.batch_size
    return min(run, TIMED_BATCH.get(device.type, TIMED_BATCH["cpu"]))


def measurement_keys(cfg: TrainConfig, counts: dict[str, int]) -> dict[str, tuple]:
    """The measurements a run's numbers come from, by pass kind (model, infer, train, head): runs alike in one share
    its measurement."""
    device = pick_device(cfg.device)
    model = (cfg.backbone, cfg.image_size, cfg.pooling, device.type)
    train = (*model, _batch(cfg, device), cfg.head, cfg.freeze_blocks, cfg.lora_rank, cfg.grad_checkpointing,
             cfg.augment, cfg.optimizer)
    head = (*model, probe_name(cfg), cfg.head, counts["train"], counts["val"], cfg.batch_size, cfg.optimizer,
            cfg.head_sweep)
    return {"model": model, "infer": ("infer", *model, _batch(cfg, device)), "train": ("train", *train),
            "head": ("head", *head)}


def time_calls(call: Callable[[], None], share: float, clock: Clock = time.perf_counter) -> list[float]:
    """Seconds of each of up to REPEATS calls after one untimed warm-up (first-call allocations, kernel choices, an
    optimiser's state); always one timed call, and no further one once `share` is spent."""
    start = clock()
    call()
    times: list[float] = []
    while len(times) < REPEATS and (not times or clock() - start < share):
        began = clock()
        call()
        times.append(max(clock() - began, 1e-9))
    return times


def time_batches(step: Callable[[], None], batch: int, share: float, clock: Clock = time.perf_counter) -> Rate:
    """Seconds per image of `step()`, one batch of `batch` images: timed at the run's batch itself, as a training
    step's per-batch cost (the optimiser's) would make a smaller batch's per-image time far too long."""
    return Rate.of(time_calls(step, share, clock), batch)


def _images(n: int, size: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)


def _infer_step(backbone: Backbone, device: torch.device, batch: int) -> Callable[[], None]:
    """One extraction batch, through the run's own `extract`."""
    images, inputs = _images(batch, backbone.preprocess.size), InputPipeline(backbone.preprocess, device)

    def step() -> None:
        out = np.empty((batch, backbone.num_features), dtype=np.float32)
        extract(backbone, [(images, None, torch.arange(batch))], inputs, out)

    return step


def _train_step(cfg: TrainConfig, backbone: Backbone, device: torch.device, batch: int) -> Callable[[], None]:
    """One training step through the run's own `train_epoch`, the model adapted as the run adapts it."""
    model = Classifier(copy.deepcopy(backbone), N_CLASSES, cfg.head)
    train_mode = adapt_like_the_run(cfg, model.backbone)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    targets = np.arange(batch) % N_CLASSES
    # Timed uncompiled: compiling would take longer than the whole calibration (stated in the table caption).
    settings = from_config(FinetuneSettings, cfg, compile=False)
    step = make_step(model, settings, targets, N_CLASSES, device)
    images, labels = _images(batch, backbone.preprocess.size), torch.as_tensor(targets)
    inputs = InputPipeline(backbone.preprocess, device, settings.augment, settings.seed)

    def run() -> None:
        train_epoch(model, step, [(images, labels, None)], inputs, train_mode)

    return run


def _head_rate(cfg: TrainConfig, n_features: int, counts: dict[str, int], share: float, clock: Clock) -> Rate:
    """Seconds per epoch of the run's probe on random features of the run's sizes (kNN: of its whole fit). A fit
    of a few epochs spreads the fit's own setup over them, which then errs long."""
    rng = np.random.default_rng(0)
    x, x_val = (rng.standard_normal((max(counts[split], N_CLASSES), n_features), dtype=np.float32)
                for split in ("train", "val"))
    y, y_val = np.arange(len(x)) % N_CLASSES, np.arange(len(x_val)) % N_CLASSES
    epochs = min(head_epochs(cfg), HEAD_EPOCHS)
    timed = cfg.model_copy(update={"epochs": epochs})
    return Rate.of(time_calls(lambda: make_probe(timed).fit(x, y, x_val, y_val, N_CLASSES), share, clock), epochs)


def head_epochs(cfg: TrainConfig) -> int:
    """How many times the head's measured unit repeats: its epochs, or once for a probe that trains no epochs (kNN)."""
    return (cfg.epochs or 1) if isinstance(make_probe(cfg), TrainingLoop) else 1


def plan_work(specs: list[RunSpec], counts: dict[str, dict[str, int]]) -> dict[str, Work]:
    """Each run's work by run id; of the frozen runs sharing a feature-cache entry only the first extracts."""
    seen, works = set(), {}
    for spec in specs:
        group = cache_group(spec.config)
        works[spec.run_id] = run_work(spec.config, counts[spec.config.task], group not in seen)
        seen.add(group)
    return works


Job = tuple[TrainConfig, Work, dict[str, int]]  # a run to estimate: its settings, its work, its dataset's counts


def _needed(jobs: list[Job]) -> dict[tuple, Job]:
    """One job per distinct measurement (pass kind × the settings it depends on), in grid order."""
    needed: dict[tuple, Job] = {}
    for cfg, work, counts in jobs:
        keys = measurement_keys(cfg, counts)
        for kind, n in (("infer", work.infer), ("train", work.train), ("head", work.head_epochs)):
            if n:
                needed.setdefault(keys[kind], (cfg, work, counts))
    return needed


def _measure(key: tuple, job: Job, backbone: Backbone, share: float, clock: Clock) -> Rate:
    """Run one measurement: its kind of pass is the key's first element (an infer key ends with its timed batch)."""
    cfg, _, counts = job
    device = pick_device(cfg.device)
    if key[0] == "infer":
        return time_batches(_infer_step(backbone, device, key[-1]), key[-1], share, clock)
    if key[0] == "train":
        batch = _batch(cfg, device)
        return time_batches(_train_step(cfg, backbone, device, batch), batch, share, clock)
    return _head_rate(cfg, backbone.num_features, counts, share, clock)


def calibrate(jobs: list[Job], budget: float = BUDGET_SECONDS, clock: Clock = time.perf_counter) -> Calibration:
    """Build each distinct backbone of the jobs once (timed: every run builds its own) and time every distinct
    measurement they need, in about `budget` seconds on this machine (at least one timed batch each)."""
    started = clock()
    calibration = Calibration(machine(pick_device(jobs[0][0].device) if jobs else torch.device("cpu")))
    built: dict[tuple, Backbone] = {}
    for cfg, _, counts in jobs:
        _build(cfg, measurement_keys(cfg, counts)["model"], built, calibration, clock)
    needed = _needed(jobs)
    share = max(budget - (clock() - started), 0.0) / max(len(needed), 1)  # what the builds left, shared out
    with torch.random.fork_rng():  # random weights and images here must not move the caller's random state
        for key, job in needed.items():
            model = measurement_keys(job[0], job[2])["model"]
            calibration.rates[key] = _measure(key, job, built[model], share, clock)
    calibration.seconds = clock() - started
    return calibration


def _build(cfg: TrainConfig, model: tuple, built: dict[tuple, Backbone], calibration: Calibration,
           clock: Clock) -> None:
    """The backbone with random weights, built once per model key; its build seconds are part of each run's cost."""
    if model in built:
        return
    start = clock()
    with torch.random.fork_rng():
        built[model] = build_backbone(cfg.backbone, "none", cfg.image_size, cfg.pooling, cfg.seed)
    calibration.builds[model] = clock() - start


def machine(device: torch.device) -> str:
    """The device's name and torch's thread count, as the dry-run table states them."""
    return f"{device_name(device)}, {torch.get_num_threads()} threads"


@dataclass(frozen=True)
class Plan:
    """A dry run's numbers: the calibration, each run's work, and the estimate of each run still to run."""

    calibration: Calibration
    works: dict[str, Work]
    estimates: dict[str, Estimate]

    @property
    def total(self) -> Estimate:
        """The time of every run still to run."""
        return sum(self.estimates.values(), Estimate(0.0, 0.0))


def estimate_study(specs: list[RunSpec], done: set[str], counts: dict[str, dict[str, int]],
                   budget: float | None = None) -> Plan:
    """Calibrate on this machine for the runs not yet done (in about `budget` s, default BUDGET_SECONDS), and
    estimate each of them."""
    works = plan_work(specs, counts)
    pending = [s for s in specs if s.run_id not in done]
    jobs = [(s.config, works[s.run_id], counts[s.config.task]) for s in pending]
    calibration = calibrate(jobs, BUDGET_SECONDS if budget is None else budget)
    estimates = {s.run_id: calibration.estimate(s.config, works[s.run_id], counts[s.config.task]) for s in pending}
    return Plan(calibration, works, estimates)


def method_note() -> str:
    """How the range is made, for the dry-run table's caption."""
    return (f"low–high: the fastest and the slowest timed batch (high ×{HIGH_MARGIN:g} for data loading and other "
            f"processes), plus each backbone's build (random weights; loading pretrained ones is extra) and "
            f"{OVERHEAD_SECONDS[0]:g}–{OVERHEAD_SECONDS[1]:g} s per run "
            "(loading, evaluation, writing); fine-tuning timed as the run trains it (freeze_blocks, LoRA), "
            "uncompiled; early stopping only shortens a run")
