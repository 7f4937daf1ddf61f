"""`modelbus`: the command line of producers and ops, one module per command group."""

from __future__ import annotations

from shared.ops.cli import (  # noqa: F401 (registration)
    accounts,
    alerts,
    config,
    db,
    docs,
    events,
    feast,
    interchange,
    platform,
    registry,
    schemas,
    scoring,
    stack,
    streams,
)
from shared.ops.cli.app import app
from shared.ops.cli.render import err

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `modelbus` console script."""
    try:
        app()
    except LookupError as exc:
        err.print(str(exc).strip("'\""), markup=False)
        raise SystemExit(2) from None
