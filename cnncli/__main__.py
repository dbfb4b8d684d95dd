"""`python -m cnncli`: the same app as the `cnncli` entry point."""

from cnncli.cli import main

if __name__ == "__main__":
    main()
