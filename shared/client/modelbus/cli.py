"""The `modelbus` command: the platform's CLI, which needs the platform's packages."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the CLI, or say what to install when only the client is."""
    try:
        from shared.ops.cli import main as cli
    except ModuleNotFoundError as exc:
        sys.exit(
            f"the modelbus CLI needs the platform's packages ({exc.name} is missing): pip install 'modelbus[platform]'"
        )
    cli()
