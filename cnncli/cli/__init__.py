"""Layer 8: the Typer app; one short module per command, heavy imports inside the commands."""

from cnncli.cli.app import main

__all__ = ["main"]
