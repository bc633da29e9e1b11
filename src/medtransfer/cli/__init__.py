"""The `medtransfer` command: a thin map from subcommands onto the public Python API."""

from medtransfer.cli.app import app, main

__all__ = ["app", "main"]
