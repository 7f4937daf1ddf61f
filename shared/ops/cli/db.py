"""`modelbus db`: the database schema."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from shared.ops.cli.app import app, cli_settings
from shared.ops.cli.render import console, say

db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION."""
    from alembic import command

    from shared.runtime.db import alembic_config

    command.upgrade(alembic_config(cli_settings()), revision)
    console.print(f"database at {revision}")


@db_app.command("wait")
def db_wait(
    timeout: Annotated[float, typer.Option(help="Longest wait, in seconds.")] = 300.0,
) -> None:
    """Wait until the database answers and is at this code's newest migration (a pod's init step)."""
    import time

    from sqlalchemy.exc import SQLAlchemyError

    from shared.runtime.db import current_revision, head_revision

    settings = cli_settings()
    head = head_revision(settings)
    deadline = time.monotonic() + timeout
    while True:
        try:
            found: str | None = asyncio.run(current_revision(settings))
            problem = f"database at {found or 'no migration'}, this code needs {head}"
        except (OSError, SQLAlchemyError) as exc:
            found, problem = None, f"database not reachable: {type(exc).__name__}: {exc}"
        if found == head:
            say(f"[db] at {head}")
            return
        if time.monotonic() >= deadline:
            say(f"[db] gave up after {timeout:.0f} s: {problem}")
            raise typer.Exit(1)
        say(f"[db] waiting: {problem}")
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


@db_app.command("revision")
def db_revision(message: Annotated[str, typer.Option("--message", "-m", help="What the migration does.")]) -> None:
    """Write a new migration from what the services' tables have that the database lacks (autogenerate)."""
    from shared.ops.migrations import autogenerate

    autogenerate(cli_settings(), message)
