"""`modelbus stack`: the local stack."""

from __future__ import annotations

import typer

from shared.ops.cli.app import app, cli_settings
from shared.ops.cli.render import err, say

stack_app = typer.Typer(help="The local stack: Kafka, PostgreSQL, S3 server, Jaeger.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")


@stack_app.command("up")
def stack_up() -> None:
    """Start the local stack (idempotent), create topics and bring the schema up to date."""
    from shared.ops import stack

    try:
        stack.up(cli_settings(), say=say)
    except stack.StackError as exc:
        err.print(f"[red]stack up failed:[/red] {exc}")
        raise typer.Exit(1) from None


@stack_app.command("down")
def stack_down() -> None:
    """Stop what `stack up` started."""
    from shared.ops import stack

    stack.down(cli_settings(), say=say)


@stack_app.command("status")
def stack_status() -> None:
    """Show each component, its pid and address; exit 1 unless all run."""
    from shared.ops import stack

    if not stack.status(cli_settings(), say=say):
        raise typer.Exit(1)
