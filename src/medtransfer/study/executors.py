"""Executors run a list of RunSpecs: `local` in this process, `ray` as one task per run on a Ray cluster."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from medtransfer.config import WEIGHT_KEYWORDS, TrainConfig, fields_in
from medtransfer.errors import UserError
from medtransfer.provenance import command_line

if TYPE_CHECKING:
    from medtransfer.hashing import Signature
    from medtransfer.progress import Reporter
    from medtransfer.study.grid import RunSpec
    from medtransfer.study.schema import Resources

# The CLI reads the choices from here before any command runs: the runner (torch) and the hashing are imported
# where they are used, so naming the choices costs nothing.
Executor = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = get_args(Executor)

# What shapes the sample table (so the features): the source settings, the duplicate action (group and drop change
# the table) and the split folders among them; unlike the split fractions, which only assign the table's rows.
SOURCE_FIELDS = fields_in("Data", "CSV", "Volumes")


def cache_group(cfg: TrainConfig) -> str | None:
    """Frozen runs that read the same feature-cache entry (None: the run extracts nothing shared).

    The data part is the source settings (the table is not loaded here); the model part is the feature key's own
    (`features.model_key`), from the backbone built on the meta device.
    """
    from medtransfer.hashing import file_signature

    if cfg.mode != "frozen":
        return None
    weights_file = None if cfg.weights in WEIGHT_KEYWORDS else file_signature(Path(cfg.weights))
    model = _model_key(cfg.backbone, cfg.image_size, cfg.pooling, cfg.weights, cfg.seed, weights_file)
    return json.dumps({**{f: getattr(cfg, f) for f in SOURCE_FIELDS}, "model": model}, sort_keys=True)


@functools.lru_cache(maxsize=256)
def _model_key(backbone: str, image_size: int | None, pooling: str, weights: str, seed: int,
               weights_file: Signature | None) -> str:
    """`model_key` as JSON, once per model and weights: a study asks for each of its runs, and a local checkpoint
    would be hashed each time (`weights_file`, its signature, tells a changed file apart)."""
    from medtransfer.engine.features import model_key
    from medtransfer.models.backbone import meta_backbone, weights_identity

    built = meta_backbone(backbone, image_size, pooling)
    return json.dumps(model_key(built, weights_identity(backbone, weights, seed)), sort_keys=True)


def check_executor(name: str) -> None:
    """Fail before any work: an unknown executor, or Ray asked for but not installed."""
    if name not in EXECUTORS:
        raise UserError(f"--executor {name}", "unknown executor", f"use one of {', '.join(EXECUTORS)}")
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("--executor ray", "Ray is not installed", "pip install 'medtransfer[ray]'") from None


def run_local(specs: list[RunSpec], reporter: Reporter, on_done: Callable[[RunSpec], None]) -> None:
    """One run after another in this process (specs come ordered so cache-sharing runs are adjacent)."""
    from medtransfer.runner import train

    for i, spec in enumerate(specs, 1):
        reporter.log(f"[{i}/{len(specs)}] {spec.label}")
        train(spec.config, reporter)
        on_done(spec)


def _run_one(values: dict, command: list[str], *_after: object) -> str:
    """A Ray task: one run from its configuration, recording the driver's command line (extra arguments only order
    it after a cache filler)."""
    from medtransfer.runner import train

    return str(train(TrainConfig(**values), command=command).run_dir.path)


def run_ray(specs: list[RunSpec], reporter: Reporter, on_done: Callable[[RunSpec], None], resources: Resources,
            address: str | None) -> None:
    """One Ray task per run; a task whose worker dies is retried; cache-sharing runs wait for the first."""
    import ray

    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"--address {address}", f"cannot reach a Ray cluster ({exc})",
                        "start one with `ray start --head` or pass its address") from None
    task = ray.remote(_run_one).options(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                                        max_retries=resources.max_retries)
    first_of_group: dict[tuple, object] = {}
    pending: dict[object, RunSpec] = {}
    for spec in specs:
        group = cache_group(spec.config)
        after = [first_of_group[group]] if group in first_of_group else []
        # Ray resolves `after` first: one extraction per cache. A worker's own argv is Ray's, not the user's command.
        ref = task.remote(spec.config.model_dump(), command_line(), *after)
        if group is not None:
            first_of_group.setdefault(group, ref)
        pending[ref] = spec
    done_count = 0
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ready[0])
            _get(ray, ready[0])
            done_count += 1
            reporter.log(f"[{done_count}/{len(specs)}] done {spec.label}")
            on_done(spec)
    finally:
        ray.shutdown()


def _get(ray, ref: object) -> None:
    """ray.get, turning a UserError raised inside the task back into itself (one clean line for the user)."""
    try:
        ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, UserError):
            raise cause from None
        raise


def execute(name: str, specs: list[RunSpec], reporter: Reporter, on_done: Callable[[RunSpec], None],
            resources: Resources, address: str | None = None) -> None:
    """Dispatch to the chosen executor."""
    check_executor(name)
    if name == "local":
        run_local(specs, reporter, on_done)
    else:
        run_ray(specs, reporter, on_done, resources, address)
