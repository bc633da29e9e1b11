"""How the command ends: bad input → one stderr line and exit 2; SIGINT or SIGTERM → one line and 130/143;
unexpected errors keep their traceback."""

from __future__ import annotations

import difflib
import os
import signal
import sys

import typer

from medtransfer.errors import Interrupted, UserError


INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


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


def _interrupted(signum: int) -> None:
    """One line and exit 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
    name = signal.Signals(signum).name
    hint = " (finished runs of the study stay: rerun with --resume)" if sys.argv[1:2] == ["run"] else ""
    typer.echo(f"error: interrupted by {name}: the run in progress was stopped and nothing of it was kept{hint}",
               err=True)
    sys.exit(128 + signum)


def _message(exc: typer.TyperException) -> str:
    """Click's message, with one "did you mean" for a misspelt option rather than a list of possibilities."""
    possibilities = getattr(exc, "possibilities", None)
    if possibilities:  # NoSuchOption: click found them with difflib; the closest is the suggestion
        (closest,) = difflib.get_close_matches(exc.option_name, possibilities, n=1, cutoff=0)  # cutoff 0: always one
        return f"{exc.message}; did you mean {closest}?"
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return message.replace("Value error, ", "")  # Typer checks a Literal choice with pydantic, which says so


def _usage_line(exc: typer.TyperException, commands: set[str]) -> str:
    """A usage error as one line naming the command and its --help."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "medtransfer"
    if command == "medtransfer" and sys.argv[1:2] and sys.argv[1] in commands:
        # Click's parser raises some errors (an option's missing value) before the subcommand's context exists.
        command = f"medtransfer {sys.argv[1]}"
    return " ".join(f"{command}: {_message(exc)} — see `{command} --help`".split())


def run_app(app: typer.Typer) -> None:
    """Run the app with the exits above; the signal handlers it replaces are put back afterwards."""
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
            commands = {c.name or c.callback.__name__ for c in app.registered_commands}
            typer.echo(f"error: {_usage_line(exc, commands)}", err=True)
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
