"""The `medtransfer` command: a thin map from subcommands onto the typed functions that do the work."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from medtransfer import __version__
from medtransfer.cli.options import config_options, option, with_parameters
from medtransfer.cli.signals import run_app
from medtransfer.config import Device, TrainConfig, fields_in
from medtransfer.study.executors import Executor

if TYPE_CHECKING:
    from medtransfer.progress import Reporter
    from medtransfer.study.run import StudyOutcome

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Which pretrained backbone and transfer mode works best on your medical images.")

Opt = typer.Option
# `inspect` reads the data as `train` would, so it takes the same source options (and caches); --dedup acts on a
# run's splits, while inspect only reports the duplicates.
INSPECT_FIELDS = (*(name for name in fields_in("Data", "CSV", "Volumes") if name != "dedup"), "cache_dir")


def _version(shown: bool) -> None:
    if shown:
        typer.echo(f"medtransfer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, Opt("--version", callback=_version, is_eager=True, help="print the version and exit")]
    = False,
) -> None:
    """Which pretrained backbone and transfer mode works best on your medical images."""


@app.command()
@with_parameters([*config_options(TrainConfig.model_fields),
                  option("quiet", bool, False, "print only the run folder's path and errors (train.log keeps all)",
                         "--quiet", "-q", panel="Output")])
def train(**values: Any) -> None:
    """One run: one dataset, one backbone, one mode, one seed."""
    quiet = values.pop("quiet")
    from medtransfer.config import parse_config

    cfg = parse_config(values, "medtransfer train")  # before torch is imported: a bad option fails in a blink
    from medtransfer.result_tables import metrics_table
    from medtransfer.progress import Reporter
    from medtransfer.runner import train as run_train

    reporter = Reporter(quiet)
    outcome = run_train(cfg, reporter)
    reporter.result(metrics_table(outcome.metrics))
    typer.echo(str(outcome.run_dir.path))  # even when quiet: what a script captures


@app.command()
def run(
    study: Annotated[Path, typer.Argument(help="study YAML (see studies/)", metavar="STUDY")],
    out: Annotated[Path | None, Opt(help="study folder", show_default="runs/<study name>")] = None,
    resume: Annotated[bool, Opt("--resume", help="skip finished runs (DONE), redo the rest")] = False,
    executor: Annotated[Executor, Opt(help="where the runs go: this process, or a Ray cluster")] = "local",
    address: Annotated[str | None, Opt(help="Ray cluster address (default: RAY_ADDRESS or a local instance)")] = None,
    dry_run: Annotated[bool, Opt("--dry-run", help="print the grid and its estimated cost, run nothing")] = False,
    replace_study: Annotated[bool, Opt("--replace-study", help="run here although the folder holds another study "
                                                               "(its study.yaml is kept beside, renamed)")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q")] = False,
) -> None:
    """A grid of runs from one YAML file, resumable, ending in the report."""
    from medtransfer.progress import Reporter
    from medtransfer.study.run import run_study

    started, reporter = time.perf_counter(), Reporter(quiet)
    outcome = run_study(study, out, resume, executor, address, dry_run, reporter, replace_study)
    if dry_run:
        return  # the plan is all a dry run prints
    print_results(reporter, outcome, str(study), started)
    typer.echo(str(outcome.report or outcome.out))  # even when quiet: what a script captures


@app.command()
def report(
    runs_dir: Annotated[Path, typer.Argument(metavar="RUNS_DIR",
                                             help="a study folder or any folder of run directories")],
    metric: Annotated[str, Opt(help="metric of the bar charts")] = "auroc",
) -> None:
    """Tables (Markdown, LaTeX, CSV), figures (PDF and 300 dpi PNG) and report.html, in RUNS_DIR/report/."""
    from medtransfer.report.build import build_report

    typer.echo(str(build_report(runs_dir, metric)))


@app.command()
@with_parameters([*config_options(INSPECT_FIELDS),
                  option("sample", int, 200, "images to open for sizes and channels", panel="Inspection"),
                  option("contact_sheet", Path | None, None, "volumes: PNG of sample slices", panel="Inspection",
                         show_default="<data>_contact_sheet.png")])
def inspect(**values: Any) -> None:
    """Counts per split, class and group; image sizes and channels; problems found (volumes: a contact sheet)."""
    sample, sheet = values.pop("sample"), values.pop("contact_sheet")
    from medtransfer.config import parse_config
    from medtransfer.inspection import inspect as inspect_data

    typer.echo(inspect_data(parse_config(values, "medtransfer inspect"), sample, sheet))


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory", metavar="RUN_DIR")],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGES",
                                                 help="image files, or folders of them (searched at any depth)")],
    output: Annotated[Path | None, Opt("--output", "-o", help="write a CSV here instead of stdout")] = None,
    device: Annotated[Device, Opt(help="where to run the model")] = "auto",
) -> None:
    """Class probabilities for new images from a finished run."""
    from medtransfer.inference import predict as predict_images

    frame = predict_images(run_dir, images, device)
    if output:
        frame.to_csv(output, index=False)
        typer.echo(str(output))
    else:
        typer.echo(frame.to_csv(index=False), nl=False)


@app.command()
def backbones() -> None:
    """The catalog, and whether each one's ImageNet/DINOv2 weights are available offline."""
    from medtransfer.result_tables import print_catalog

    print_catalog()


@app.command()
def demo(
    out: Annotated[Path, Opt(help="where the demo runs go")] = Path("runs/demo"),
    quiet: Annotated[bool, Opt("--quiet", "-q")] = False,
) -> None:
    """A small offline study on synthetic images (weights: none), ending in a results table."""
    from medtransfer.demo import NOTE, TITLE, run_demo
    from medtransfer.progress import Reporter

    started, reporter = time.perf_counter(), Reporter(quiet)
    print_results(reporter, run_demo(out, reporter), TITLE, started, NOTE)


def print_results(reporter: Reporter, outcome: StudyOutcome, title: str, started: float, note: str = "") -> None:
    """A finished study's results table and summary line on stdout: the same for `run` and `demo`."""
    from medtransfer.result_tables import finished_records, results_table, study_summary

    records = finished_records(outcome.specs)
    reporter.result(results_table(outcome.specs, records, title))
    reporter.result(" ".join(filter(None, (study_summary(outcome, records, time.perf_counter() - started), note))))


def main() -> None:
    """Entry point: bad input → one stderr line and exit 2; an interruption → one line and 130/143;
    unexpected errors keep their traceback."""
    run_app(app)
