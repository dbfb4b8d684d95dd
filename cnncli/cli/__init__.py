"""Layer 8: the Typer app; one short module per command, heavy imports inside the commands."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """The ``cnncli`` entry point (`cnncli.cli.app.main`); a Ctrl-C while the app imports exits 130 quietly."""
    try:
        from cnncli.cli.app import main as run
    except KeyboardInterrupt:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second one must not interrupt the exit
        raise SystemExit(130) from None
    run(argv)


__all__ = ["main"]
