"""Command options generated from TrainConfig's fields, so that each setting is declared once (in config.py).

A field becomes `--field-name` with the field's default, choices (Literal), help and help panel; booleans become
`--x/--no-x`. Values reach TrainConfig as given: pydantic checks them all at once, so every problem is one line."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import typer
from rich.markup import escape

from medtransfer.config import MODE_DEFAULTS, PANELS, TrainConfig, field_extra

F = TypeVar("F", bound=Callable[..., Any])
NONE = type(None)


def flag(name: str) -> str:
    """The option spelling of a setting: `head_sweep` → `--head-sweep`."""
    return "--" + name.replace("_", "-")


def cli_type(annotation: Any) -> Any:
    """What typer parses for a field's type: the type itself, except lists and mappings, which pass as text (a
    `mode="before"` validator in config.py splits `a,b` and `train=A,test=B`)."""
    args = get_args(annotation)
    optional = get_origin(annotation) is not Literal and NONE in args
    inner = next(a for a in args if a is not NONE) if optional else annotation
    base = str if get_origin(inner) in (list, dict) else inner
    return base | None if optional else base


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_text(name: str) -> str | bool:
    """The default as `--help` states it: per mode (from MODE_DEFAULTS), as declared (`show`), or the value."""
    if name in MODE_DEFAULTS["frozen"]:
        return ", ".join(f"{mode} {_text(values[name])}" for mode, values in MODE_DEFAULTS.items())
    shown = field_extra(name).get("show")
    if shown:
        return str(shown)
    return TrainConfig.model_fields[name].default is not None


def panel(name: str) -> str:
    """The help panel a TrainConfig field is declared in."""
    return str(field_extra(name)["panel"])


def parameter(name: str, annotation: Any, default: Any, info: Any) -> inspect.Parameter:
    """One command parameter as typer reads it from a signature: `name: Annotated[annotation, info] = default`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, info])


def option(name: str, annotation: Any, default: Any, help: str, *decls: str, panel: str | None = None,
           **settings: Any) -> inspect.Parameter:
    """A command's own option (not a TrainConfig field), shown in `panel`."""
    info = typer.Option(*(decls or (flag(name),)), help=escape(help), rich_help_panel=panel, **settings)
    return parameter(name, annotation, default, info)


def config_option(name: str) -> inspect.Parameter:
    """The option of one TrainConfig field: its name, default, choices, help and panel."""
    field = TrainConfig.model_fields[name]
    # A repeated option collects its values as a list, which the field's `mode="before"` validator reads.
    annotation = list[str] | None if field_extra(name).get("repeat") else cli_type(field.annotation)
    decls = (f"{flag(name)}/--no-{flag(name)[2:]}",) if bool in (annotation, *get_args(annotation)) else ()
    # Keep a refused choice for pydantic, which reports it together with every other problem.
    lenient = {"parser": str} if get_origin(annotation) is Literal else {}
    return option(name, annotation, field.default, field.description or "", *decls, panel=panel(name),
                  show_default=default_text(name), **lenient)


def data_argument() -> inspect.Parameter:
    """DATA, the one positional argument of `train` and `inspect`, as TrainConfig declares it."""
    help = TrainConfig.model_fields["data"].description or ""
    return parameter("data", str, inspect.Parameter.empty, typer.Argument(help=escape(help), show_default=False, metavar="DATA"))


def config_options(names: Iterable[str]) -> list[inspect.Parameter]:
    """DATA, then the options of these TrainConfig fields panel by panel (in PANELS' order; help lists the panels
    in the order their first option comes)."""
    ordered = sorted((name for name in names if name != "data"), key=lambda name: PANELS.index(panel(name)))
    return [data_argument(), *(config_option(name) for name in ordered)]


def with_parameters(params: list[inspect.Parameter]) -> Callable[[F], F]:
    """Give a command that takes `**values` the typed signature typer builds its options from."""
    def wrap(command: F) -> F:
        command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
        return command
    return wrap
