"""The `train` and `inspect` options are TrainConfig's fields: same names, defaults, choices, help and panels."""

from __future__ import annotations

from typing import Literal, get_args, get_origin

import pytest
import typer.main
from helpers import run_cli
from rich.markup import escape

import medtransfer
from medtransfer.cli.commands import app
from medtransfer.config import MODE_DEFAULTS, TrainConfig, parse_config
from medtransfer.study.executors import EXECUTORS

FIELDS = tuple(TrainConfig.model_fields)
OWN = {"train": {"quiet"}, "inspect": {"sample", "contact_sheet"}}  # each command's options that are not settings
SOURCE_PANELS = ("Data", "CSV", "Volumes")


def params(command: str) -> dict:
    """The parameters typer built for a command, by name."""
    return {p.name: p for p in typer.main.get_command(app).commands[command].params}


def panel_of(name: str) -> str:
    return TrainConfig.model_fields[name].json_schema_extra["panel"]


def choices_of(annotation: object) -> tuple | None:
    return get_args(annotation) if get_origin(annotation) is Literal else None


def mode_defaults_in(shown: str) -> dict[str, dict[str, object]]:
    """`frozen 0.001, finetune 0.0001` (or on/off) read back into values, per mode."""
    words = {"on": True, "off": False}
    pairs = (part.split() for part in shown.split(","))
    return {mode: words[text] if text in words else float(text) for mode, text in pairs}


def check_option(param, name: str) -> None:
    field = TrainConfig.model_fields[name]
    assert param.help == escape(field.description), name
    assert param.type_descriptor.choices == choices_of(field.annotation), name
    if name == "data":
        assert param.required and param.opts == ["data"]
        return
    assert param.opts == [f"--{name.replace('_', '-')}"], name
    assert param.default == field.default, name
    assert param.rich_help_panel == panel_of(name), name
    is_bool = bool in (field.annotation, *get_args(field.annotation))
    assert param.secondary_opts == ([f"--no-{name.replace('_', '-')}"] if is_bool else []), name
    if name in MODE_DEFAULTS["frozen"]:
        assert mode_defaults_in(param.show_default) == {m: v[name] for m, v in MODE_DEFAULTS.items()}, name
    else:
        assert param.show_default == (field.json_schema_extra.get("show") or field.default is not None), name


@pytest.mark.parametrize("name", FIELDS)
def test_every_setting_is_a_train_option_as_declared(name):
    check_option(params("train")[name], name)


def test_train_has_no_option_beyond_the_settings():
    assert set(params("train")) == set(FIELDS) | OWN["train"]


def test_inspect_takes_the_source_settings_and_the_cache():
    # --dedup acts on a run's splits; inspect reports the duplicates whatever it is.
    expected = {name for name in FIELDS if panel_of(name) in SOURCE_PANELS and name != "dedup"} | {"cache_dir"}
    found = params("inspect")
    assert set(found) == expected | OWN["inspect"]
    for name in expected:
        check_option(found[name], name)


def test_every_panel_of_the_config_is_used_and_ordered_as_declared():
    panels = [panel_of(name) for name in FIELDS]
    from medtransfer.config import PANELS

    assert set(panels) == set(PANELS)
    listed = [p.rich_help_panel for p in params("train").values() if p.name in FIELDS and p.name != "data"]
    assert listed == sorted(listed, key=PANELS.index)


def test_todays_flag_spellings_reach_the_config():
    argv = ["synthetic:n=20", "--head-sweep", "--class-weights", "--no-augment", "--no-image-cache", "--skip-missing",
            "--allow-missing-classes", "--skip-incomplete", "--modalities", "t1, t2,flair", "--class-order", "0,1",
            "--split-dirs", "train=Training,test=Testing", "--mode", "frozen", "--lr", "0.5", "-q"]
    command = typer.main.get_command(app).commands["train"]
    values = dict(command.make_context("train", argv).params)
    assert values.pop("quiet") is True
    cfg = parse_config(values)
    assert (cfg.head_sweep, cfg.class_weights, cfg.augment, cfg.image_cache, cfg.skip_missing) == (
        True, True, False, False, True)
    assert (cfg.allow_missing_classes, cfg.skip_incomplete, cfg.lr) == (True, True, 0.5)
    assert cfg.modalities == ["t1", "t2", "flair"] and cfg.class_order == ["0", "1"]
    assert cfg.split_dirs == {"train": "Training", "test": "Testing"}


def test_help_lists_choices_panels_and_brackets(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option, so each one's text can be found whole
    code, stdout, _ = run_cli(["train", "--help"], monkeypatch, capsys)
    assert code == 0
    for panel in {panel_of(name) for name in FIELDS}:
        assert f"─ {panel} ─" in stdout
    for name in FIELDS:
        choices = choices_of(TrainConfig.model_fields[name].annotation)
        if choices:
            assert f"<{'|'.join(choices)}>" in stdout, name
    lora = TrainConfig.model_fields["lora_rank"].description
    assert "[lora]" in lora and lora in stdout  # Rich markup would swallow an unescaped [lora]
    assert "[default: (frozen" in stdout


def test_inspect_help_shows_its_own_options(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")
    code, stdout, _ = run_cli(["inspect", "--help"], monkeypatch, capsys)
    assert code == 0 and "--contact-sheet" in stdout and "--sample" in stdout and "--cache-dir" in stdout
    assert "--backbone" not in stdout


def test_version_is_the_installed_distributions(monkeypatch, capsys):
    from importlib.metadata import version

    code, stdout, stderr = run_cli(["--version"], monkeypatch, capsys)
    assert (code, stdout.strip(), stderr) == (0, f"medtransfer {version('medtransfer')}", "")
    assert medtransfer.__version__ == version("medtransfer")


@pytest.mark.parametrize(("command", "name", "choices"), [
    ("predict", "device", get_args(TrainConfig.model_fields["device"].annotation)),
    ("run", "executor", EXECUTORS),
])
def test_fixed_choices_of_other_commands_are_listed_and_checked(command, name, choices, monkeypatch, capsys, tmp_path):
    assert params(command)[name].type_descriptor.choices == choices
    monkeypatch.setenv("COLUMNS", "400")
    code, stdout, _ = run_cli([command, "--help"], monkeypatch, capsys)
    assert code == 0 and f"<{'|'.join(choices)}>" in stdout
    # Refused before any work: no run directory or study file is even looked at.
    paths = [str(tmp_path / "absent"), "x.png"] if command == "predict" else [str(tmp_path / "absent.yaml")]
    code, _, stderr = run_cli([command, *paths, f"--{name}", "bogus"], monkeypatch, capsys)
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert f"'--{name}': 'bogus' is not one of" in stderr and "Value error" not in stderr
