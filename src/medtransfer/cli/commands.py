"""The `medtransfer` command: a thin map from subcommands onto the typed functions that do the work."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from medtransfer.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Which pretrained backbone and transfer mode works best on your medical images.")

Opt = typer.Option


@app.command()
def train(
    data: Annotated[str, typer.Argument(help="DATA: a .npz (MedMNIST), a .csv manifest, an image folder, or synthetic:")],
    backbone: Annotated[str, Opt(help="catalog name (resnet50, dinov2_vits14, …) or any timm model")] = "resnet50",
    weights: Annotated[str, Opt(help="imagenet | none | PATH to .safetensors/.pth (timm, torchvision or DINOv2 keys)")] = "imagenet",
    mode: Annotated[str, Opt(help="frozen (features cached once, head trained) | finetune (end to end)")] = "frozen",
    head: Annotated[str, Opt(help="linear | mlp (the paper's Linear→256→ReLU→Linear) | knn (frozen: k 10/20/50)")] = "linear",
    head_sweep: Annotated[bool, Opt("--head-sweep", help="frozen: 16 heads (4 lr × 4 weight decay) in one go, best on val")] = False,
    image_size: Annotated[int | None, Opt(help="input size; default from the backbone's pretrained config")] = None,
    pooling: Annotated[str, Opt(help="auto | cls_mean | cls | mean (ViTs) | avg (CNNs)")] = "auto",
    optimizer: Annotated[str, Opt(help="adam | adamw | sgd")] = "adam",
    lr: Annotated[float | None, Opt(help="learning rate [frozen 1e-3, finetune 1e-4]")] = None,
    weight_decay: Annotated[float, Opt()] = 0.0,
    batch_size: Annotated[int | None, Opt(help="[frozen 256, finetune 32]")] = None,
    epochs: Annotated[int | None, Opt(help="[frozen 100, finetune 20]")] = None,
    schedule: Annotated[str, Opt(help="cosine | step | none")] = "cosine",
    patience: Annotated[int | None, Opt(help="stop after this many epochs without val improvement")] = None,
    select: Annotated[str, Opt(help="val_auroc | val_accuracy (paper protocol) | val_loss")] = "val_auroc",
    class_weights: Annotated[bool, Opt("--class-weights", help="inverse-frequency class weights in the loss")] = False,
    augment: Annotated[bool | None, Opt("--augment/--no-augment", help="flip + small rotation [finetune on]")] = None,
    accumulate: Annotated[int, Opt(help="finetune: batches per optimiser step (gradient accumulation)")] = 1,
    compile: Annotated[bool, Opt("--compile", help="finetune: torch.compile the model")] = False,
    freeze_blocks: Annotated[int | None, Opt(help="finetune: train only the last N blocks and the head")] = None,
    lora_rank: Annotated[int | None, Opt(help="finetune: LoRA of this rank on ViT attention (needs [lora])")] = None,
    grad_checkpointing: Annotated[bool, Opt("--grad-checkpointing", help="finetune: recompute activations")] = False,
    path_col: Annotated[str | None, Opt(help="CSV: image path column")] = None,
    label_col: Annotated[str | None, Opt(help="CSV: label column")] = None,
    group_col: Annotated[str | None, Opt(help="CSV: patient/lesion column (splits and bootstrap by group)")] = None,
    split_col: Annotated[str | None, Opt(help="CSV: predefined split column (train/val/test)")] = None,
    image_root: Annotated[str | None, Opt(help="CSV: folder the image paths are relative to")] = None,
    skip_missing: Annotated[bool, Opt("--skip-missing", help="CSV: drop rows whose image is missing")] = False,
    split_dirs: Annotated[str | None, Opt(help="folders: which folder is which split, e.g. train=Training,test=Testing")] = None,
    dedup: Annotated[str, Opt(help="duplicates across splits: warn | group (carved splits keep copies together) | drop")] = "warn",
    modalities: Annotated[str | None, Opt(help="volumes: modalities in channel order, e.g. t1post,t2,flair")] = None,
    modality_mode: Annotated[str, Opt(help="volumes: fused (3 → RGB, 1 → grey) | separate")] = "fused",
    slices: Annotated[str, Opt(help="volumes: center:K | all-nonzero | tumor:K (needs a seg file)")] = "center:16",
    plane: Annotated[str, Opt(help="volumes: axial | coronal | sagittal")] = "axial",
    normalize: Annotated[str, Opt(help="volumes: percentile (0.5–99.5 clip) | zscore (inside the brain)")] = "percentile",
    labels_csv: Annotated[str | None, Opt(help="volumes: CSV patient_id,label")] = None,
    skip_incomplete: Annotated[bool, Opt("--skip-incomplete", help="volumes: skip patients missing a modality")] = False,
    pattern: Annotated[str, Opt(help="volumes: file name pattern")] = "{case}_{modality}.nii.gz",
    test_fraction: Annotated[float, Opt(help="test share when DATA has no test split")] = 0.2,
    val_fraction: Annotated[float, Opt(help="val share of the training pool when DATA has no val split")] = 0.2,
    train_fraction: Annotated[float, Opt(help="keep this stratified, grouped fraction of train")] = 1.0,
    seed: Annotated[int, Opt(help="seeds initialisation, training and the bootstrap")] = 0,
    split_seed: Annotated[int, Opt(help="seeds carved splits and folds (fixed across training seeds)")] = 0,
    allow_missing_classes: Annotated[bool, Opt("--allow-missing-classes", help="a class too rare for every split is a recorded warning")] = False,
    class_order: Annotated[str | None, Opt(help="ordinal task: classes lowest to highest, e.g. 0,1,2,3,4 (adds quadratic kappa)")] = None,
    bootstrap: Annotated[int, Opt(help="bootstrap resamples for the 95% CIs")] = 2000,
    patient_agg: Annotated[str, Opt(help="pooling of image probabilities per patient: mean | max | vote")] = "mean",
    device: Annotated[str, Opt(help="auto | cpu | cuda")] = "auto",
    workers: Annotated[int | None, Opt(help="DataLoader workers [half the cores]")] = None,
    cache_dir: Annotated[str | None, Opt(help="image, feature and DICOM caches [user cache folder]")] = None,
    image_cache: Annotated[bool, Opt("--image-cache/--no-image-cache", help="decode images once into a uint8 cache")] = True,
    out: Annotated[str | None, Opt(help="run directory [runs/<data>-<backbone>-<mode>-s<seed>]")] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """One run: one dataset, one backbone, one mode, one seed."""
    values = {k: v for k, v in locals().items() if k != "quiet"}
    values["modalities"] = modalities.split(",") if modalities else None
    values["class_order"] = class_order.split(",") if class_order else None
    from medtransfer.config import parse_config

    cfg = parse_config(values, "medtransfer train")  # before torch is imported: a bad option fails in a blink
    from medtransfer.progress import Reporter
    from medtransfer.cli.render import print_metrics
    from medtransfer.runner import train as run_train

    reporter = Reporter(quiet)
    outcome = run_train(cfg, reporter)
    if not quiet:
        print_metrics(reporter.console, outcome.metrics)
    typer.echo(str(outcome.run_dir))


@app.command()
def run(
    study: Annotated[Path, typer.Argument(help="study YAML (see studies/)")],
    out: Annotated[Path | None, Opt(help="study folder [runs/<study name>]")] = None,
    resume: Annotated[bool, Opt("--resume", help="skip finished runs (DONE), redo the rest")] = False,
    executor: Annotated[str, Opt(help="local | ray")] = "local",
    address: Annotated[str | None, Opt(help="Ray cluster address (default: RAY_ADDRESS or a local instance)")] = None,
    dry_run: Annotated[bool, Opt("--dry-run", help="print the grid and its estimated cost, run nothing")] = False,
    replace_study: Annotated[bool, Opt("--replace-study", help="run here although the folder holds another study "
                                                               "(its study.yaml is kept beside, renamed)")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q")] = False,
) -> None:
    """A grid of runs from one YAML file, resumable, ending in the report."""
    from medtransfer.progress import Reporter
    from medtransfer.study.run import run_study

    outcome = run_study(study, out, resume, executor, address, dry_run, Reporter(quiet), replace_study)
    typer.echo(str(outcome.report or outcome.out))


@app.command()
def report(
    runs_dir: Annotated[Path, typer.Argument(help="a study folder or any folder of run directories")],
    metric: Annotated[str, Opt(help="metric of the bar charts")] = "auroc",
) -> None:
    """Tables (Markdown, LaTeX, CSV), figures (PNG) and report.html, in RUNS_DIR/report/."""
    from medtransfer.report.build import build_report

    typer.echo(str(build_report(runs_dir, metric)))


@app.command()
def inspect(
    data: Annotated[str, typer.Argument(help="DATA, as for train")],
    path_col: Annotated[str | None, Opt()] = None,
    label_col: Annotated[str | None, Opt()] = None,
    group_col: Annotated[str | None, Opt()] = None,
    split_col: Annotated[str | None, Opt()] = None,
    image_root: Annotated[str | None, Opt()] = None,
    skip_missing: Annotated[bool, Opt("--skip-missing")] = False,
    split_dirs: Annotated[str | None, Opt(help="folders: which folder is which split, e.g. train=Training,test=Testing")] = None,
    sample: Annotated[int, Opt(help="images to open for sizes and channels")] = 200,
    modalities: Annotated[str | None, Opt(help="volumes: modalities in channel order")] = None,
    slices: Annotated[str, Opt(help="volumes: center:K | all-nonzero | tumor:K")] = "center:16",
    plane: Annotated[str, Opt(help="volumes: axial | coronal | sagittal")] = "axial",
    normalize: Annotated[str, Opt(help="volumes: percentile | zscore")] = "percentile",
    labels_csv: Annotated[str | None, Opt(help="volumes: CSV patient_id,label")] = None,
    pattern: Annotated[str, Opt(help="volumes: file name pattern")] = "{case}_{modality}.nii.gz",
    contact_sheet: Annotated[Path | None, Opt(help="volumes: PNG of sample slices [<data>_contact_sheet.png]")] = None,
) -> None:
    """Counts per split, class and group; image sizes and channels; problems found (volumes: a contact sheet)."""
    from medtransfer.config import parse_config
    from medtransfer.data.load import load_table, volume_options, volume_root
    from medtransfer.data.npz_volumes import describe_npz_volumes, is_npz_volumes
    from medtransfer.inspection import inspect_table, render, render_npz_volumes, render_volumes

    cfg = parse_config({"data": data, "path_col": path_col, "label_col": label_col, "group_col": group_col,
                        "split_col": split_col, "image_root": image_root, "skip_missing": skip_missing, "split_dirs": split_dirs,
                        "modalities": modalities.split(",") if modalities else None, "slices": slices,
                        "plane": plane, "normalize": normalize, "labels_csv": labels_csv, "pattern": pattern},
                       "medtransfer inspect")
    if not cfg.modalities:
        table = load_table(cfg)
        from medtransfer.data.duplicates import inspect_duplicates

        text = render(inspect_table(table, sample, inspect_duplicates(table, cfg.cache_dir)))
        if is_npz_volumes(table):  # 3D MedMNIST: volumes per split, slices per volume, and a contact sheet
            from medtransfer.data.contact_sheet import contact_sheet as write_sheet

            sheet = write_sheet(table, contact_sheet or Path(f"{Path(data).name}_contact_sheet.png"))
            text += "\n\n" + render_npz_volumes(describe_npz_volumes(table), sheet)
        typer.echo(text)
        return
    from medtransfer.data.contact_sheet import contact_sheet as write_sheet
    from medtransfer.data.volumes import describe_volumes

    report = describe_volumes(volume_root(cfg), volume_options(cfg))
    sheet = contact_sheet or Path(f"{Path(data).name}_contact_sheet.png")
    write_sheet(load_table(cfg), sheet)
    typer.echo(render_volumes(report, sheet))


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory")],
    images: Annotated[list[Path], typer.Argument(help="image files")],
    output: Annotated[Path | None, Opt("--output", "-o", help="write a CSV here instead of stdout")] = None,
    device: Annotated[str, Opt()] = "auto",
) -> None:
    """Class probabilities for new images from a finished run."""
    from medtransfer.predict import predict_images

    frame = predict_images(run_dir, images, device)
    if output:
        frame.to_csv(output, index=False)
        typer.echo(str(output))
    else:
        typer.echo(frame.to_csv(index=False), nl=False)


@app.command()
def backbones() -> None:
    """The catalog, and whether each one's ImageNet/DINOv2 weights are available offline."""
    from medtransfer.cli.render import print_catalog

    print_catalog()


@app.command()
def demo(
    out: Annotated[Path, Opt(help="where the demo runs go")] = Path("runs/demo"),
    quiet: Annotated[bool, Opt("--quiet", "-q")] = False,
) -> None:
    """A small offline study on synthetic images (weights: none), ending in a results table."""
    from medtransfer.demo import run_demo

    run_demo(out, quiet)


class Interrupted(BaseException):
    """SIGINT or SIGTERM: unwinds like KeyboardInterrupt, which Typer would turn into a silent return."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _install_interrupt_handlers() -> dict[int, object]:
    """Turn SIGINT and SIGTERM into `Interrupted` in this process; returns the handlers they replace."""
    main_pid = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:  # a forked DataLoader worker: the main process reports the interruption
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # torch's worker loop exits quietly on this
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _received.append(signum)
        # A signal sent to the whole process group kills the DataLoader workers too; torch's SIGCHLD handler would
        # then print a traceback while the loader is torn down. The run is over either way.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        raise Interrupted(signum)

    previous = {}
    for sig in INTERRUPT_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_IGN:
            continue  # ignored by whoever started us (nohup, a background job): keep it so
        previous[sig] = signal.signal(sig, handler)
    return previous


_received: list[int] = []


def _interrupted(signum: int) -> None:
    """One line and exit 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
    name = signal.Signals(signum).name
    hint = " (finished runs of the study stay: rerun with --resume)" if sys.argv[1:2] == ["run"] else ""
    typer.echo(f"error: interrupted by {name}: the run in progress was stopped and nothing of it was kept{hint}",
               err=True)
    sys.exit(128 + signum)


def _usage_line(exc: typer.TyperException) -> str:
    """A usage error as one line naming the command and its --help."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "medtransfer"
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return " ".join(f"{command}: {message} — see `{command} --help`".split())


def main() -> None:
    """Entry point: bad input → one stderr line and exit 2; an interruption → one line and 130/143;
    unexpected errors keep their traceback."""
    _received.clear()
    previous = _install_interrupt_handlers()
    try:
        code = app(standalone_mode=False)
    except Interrupted as exc:
        _interrupted(exc.signum)
    except UserError as exc:
        typer.echo(f"error: {exc.line()}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors (Typer vendors click: the click package's classes miss them)
        if type(exc).__name__ != "NoArgsIsHelpError":  # bare `medtransfer`: the help was the answer
            typer.echo(f"error: {_usage_line(exc)}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted(signal.SIGINT)
    except BaseException:
        if _received:  # e.g. a DataLoader worker killed by the same signal, noticed first: still an interruption
            _interrupted(_received[0])
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    # Without standalone mode Typer *returns* exit codes, KeyboardInterrupt's 130 among them: they must not
    # become exit 0.
    if isinstance(code, int) and code:
        if code == 128 + signal.SIGINT:
            _interrupted(signal.SIGINT)
        sys.exit(code)
