"""The `medtransfer` command: a thin map from subcommands onto the public Python API."""

from medtransfer.cli.commands import app, main

__all__ = ["app", "main"]
