"""`modelbus`: the command line of producers and ops."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shared.settings import Settings, get_settings

app = typer.Typer(help="modelbus: a model's whole life as durable, traced Kafka events.", no_args_is_help=True)
stack_app = typer.Typer(help="The local stack: Kafka, PostgreSQL, S3 server, trace receiver.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
schemas_app = typer.Typer(help="JSON Schemas and the AsyncAPI document in schemas/.", no_args_is_help=True)
publish_app = typer.Typer(help="Publish events, validated before sending.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter topic.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(db_app, name="db")
app.add_typer(schemas_app, name="schemas")
app.add_typer(publish_app, name="publish")
app.add_typer(dlq_app, name="dlq")
console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def say(line: str) -> None:
    """Print a progress line as it is (no markup: component names are in brackets)."""
    console.print(line, markup=False)


def _settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


@stack_app.command("up")
def stack_up() -> None:
    """Start the local stack (idempotent), create topics and bring the schema up to date."""
    from shared import stack

    try:
        stack.up(_settings(), say=say)
    except stack.StackError as exc:
        err.print(f"[red]stack up failed:[/red] {exc}")
        raise typer.Exit(1) from None


@stack_app.command("down")
def stack_down() -> None:
    """Stop what `stack up` started."""
    from shared import stack

    stack.down(_settings(), say=say)


@stack_app.command("status")
def stack_status() -> None:
    """Show each component, its pid and address; exit 1 unless all run."""
    from shared import stack

    if not stack.status(_settings(), say=say):
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION."""
    from alembic import command

    from shared.db import alembic_config

    command.upgrade(alembic_config(_settings()), revision)
    console.print(f"database at {revision}")


def main() -> None:
    """Entry point of the `modelbus` console script."""
    app()
