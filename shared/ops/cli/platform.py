"""`modelbus up` and `modelbus demo`: the platform as processes, and the whole loop hands-free."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from shared.ops.cli.app import app, cli_settings
from shared.ops.cli.render import say


@app.command("up")
def up() -> None:
    """Start the local stack and the platform (six services and serving, one process each), show
    their status and follow the lifecycle events; Ctrl-C stops what it started."""
    from shared.ops.platform import run_up

    raise typer.Exit(asyncio.run(run_up(cli_settings(), say)))


@app.command("demo")
def demo(
    rows_per_second: Annotated[float | None, typer.Option(help="Labelled traffic sent to serving.")] = None,
    training_timeout: Annotated[float | None, typer.Option(help="Longest wait for a training, in seconds.")] = None,
    stay: Annotated[
        bool, typer.Option(help="Keep the platform and its console running afterwards, until Ctrl-C.")
    ] = False,
) -> None:
    """The whole loop, hands-free: train, evaluate, roll out; drift, alert, retrain, canary, promote
    or roll back; a summary at the end (exit 1 naming the stage that stalled)."""
    from shared.ops.demo import run_demo, timings_from

    timings = timings_from({"rows_per_second": rows_per_second, "training": training_timeout})
    raise typer.Exit(asyncio.run(run_demo(cli_settings(), say, timings, stay=stay)))
