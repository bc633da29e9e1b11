"""A study's preflight: before the first run, every dataset is loaded and split every way the grid will split it
(its subgroup columns and external sets read and checked), and every backbone is built on the meta device and
checked with the run's own checks; every problem across the grid is reported in one error."""

from __future__ import annotations

from medtransfer.config import TrainConfig
from medtransfer.data.external import load_external
from medtransfer.data.load import load_table, split_plan
from medtransfer.data.splits import assign_splits
from medtransfer.data.table import SPLITS
from medtransfer.errors import UserError
from medtransfer.evaluation.shift_scoring import check_subgroups
from medtransfer.study.grid import RunSpec
from medtransfer.tracking import check_tracker

Problem = tuple[str, str]  # (what: a dataset or backbone of the study, what is wrong with it)


def _dataset_problems(specs: list[RunSpec]) -> tuple[dict[str, dict[str, int]], list[Problem]]:
    """Load every dataset once and split it every way the study will (paths, columns and splits); each dataset's
    split counts, and the problem of each dataset that fails."""
    by_task: dict[str, list[RunSpec]] = {}
    for spec in specs:
        by_task.setdefault(spec.config.task, []).append(spec)
    counts, problems = {}, []
    for task, task_specs in by_task.items():
        try:
            cfg = task_specs[0].config
            table = load_table(cfg)
            frame = assign_splits(table, split_plan(cfg.model_copy(update={"train_fraction": 1.0})))
            # Every other way a run splits it (train fractions, folds): one that cannot be carved fails here.
            plans = {repr(split_plan(s.config)): s.config for s in task_specs}
            for other in plans.values():
                assign_splits(table, split_plan(other))
            # Its subgroup columns and external sets (read, classes matched) are checked here too.
            check_subgroups(cfg, table)
            load_external(cfg, table)
        except UserError as exc:
            problems.append((f"study dataset {task!r}", exc.line()))
            continue
        counts[task] = {s: int((frame["split"] == s).sum()) for s in SPLITS}
    return counts, problems


def model_problems(cfg: TrainConfig) -> list[Problem]:
    """What would stop this run's backbone: its name, input size and pooling, and in finetune mode the blocks to
    freeze and LoRA's targets and package, checked on a meta-device build (no weights read) by the run's own checks."""
    from medtransfer.models.adapt import check_freeze_blocks, check_lora_targets, import_peft
    from medtransfer.models.backbone import meta_backbone

    try:
        backbone = meta_backbone(cfg.backbone, cfg.image_size, cfg.pooling)
        if cfg.freeze_blocks is not None:
            check_freeze_blocks(backbone, cfg.freeze_blocks)
        if cfg.lora_rank is not None:
            check_lora_targets(backbone)
            import_peft()
    except UserError as exc:
        return [(f"study backbone {cfg.backbone!r}", exc.line())]
    return []


def _weights_problems(cfg: TrainConfig) -> list[Problem]:
    from medtransfer.models.backbone import check_weights

    try:
        check_weights(cfg.backbone, cfg.weights)
    except UserError as exc:
        return [(f"study backbone {cfg.backbone!r}", exc.line())]
    return []


def _tracker_problems(kinds: set[str]) -> list[Problem]:
    """A --tracker whose extra is missing, once per tracker the grid uses."""
    found = []
    for kind in sorted(kinds):
        try:
            check_tracker(kind)
        except UserError as exc:
            found.append((f"study tracker {kind!r}", exc.line()))
    return found


def _model_fields(cfg: TrainConfig) -> tuple:
    """What of a run the model checks read: runs alike in these are checked once."""
    return cfg.backbone, cfg.weights, cfg.image_size, cfg.pooling, cfg.freeze_blocks, cfg.lora_rank


def preflight(specs: list[RunSpec]) -> dict[str, dict[str, int]]:
    """Fail before any work on anything that would fail later, every problem of the grid in one error: backbones,
    weights files, trackers, data sources. Returns each dataset's split counts."""
    distinct = {_model_fields(s.config): s.config for s in specs}.values()
    problems = [problem for cfg in distinct for problem in _weights_problems(cfg) + model_problems(cfg)]
    problems += _tracker_problems({s.config.tracker for s in specs})
    counts, data = _dataset_problems(specs)
    problems = list(dict.fromkeys(problems + data))  # one backbone problem shared by several settings: once
    if len(problems) == 1:
        raise UserError(*problems[0], "fix it (or remove it from the study); no run was started")
    if problems:
        listed = "; ".join(f"{what}: {line}" for what, line in problems)
        raise UserError("study", f"{len(problems)} problems: {listed}",
                        "fix them (or remove them from the study); no run was started")
    return counts
