"""`python -m medtransfer` runs the CLI."""

from medtransfer.cli import main

main()
