"""The command line: only ``--help``, since every setting comes from the environment."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .settings import RuntimeSettings, describe_settings

PACKAGE = __name__.split(".")[0]


def parse_command_line(settings: type[RuntimeSettings], argv: Sequence[str] | None = None) -> None:
    """Print the help and exit 0 for ``--help``; exit 2 with the usage for anything else."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {PACKAGE}",
        description=(
            "Serve until SIGTERM, then drain and exit 0. Every setting is an\n"
            "environment variable, listed below with its default."
        ),
        epilog=f"settings:\n{describe_settings(settings)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
