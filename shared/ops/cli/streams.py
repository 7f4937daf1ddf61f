"""`modelbus stream send` and `modelbus stream read`: a model's input and output topics, as a
user's services use them (shared.ops.streams)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.ops.cli.app import app, cli_settings
from shared.ops.cli.render import console, err

stream_app = typer.Typer(help="Streaming inference: a model's input and output topics.", no_args_is_help=True)
app.add_typer(stream_app, name="stream")


@stream_app.command("send")
def send(
    model: Annotated[str, typer.Argument(help="Model name.")],
    source: Annotated[
        Path, typer.Option("--file", help="JSON lines: a row (object) or a list of rows per line; - is stdin.")
    ] = Path("-"),
    key: Annotated[str | None, typer.Option(help="Row field whose value is each message's key (the entity).")] = None,
) -> None:
    """Write feature records to a model's input topic, one message per line."""
    from shared.contract.streams import STREAM_INPUT
    from shared.ops import streams

    lines = sys.stdin if str(source) == "-" else source.open()
    messages: list[tuple[str | None, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = STREAM_INPUT.validate_json(line)
        except ValueError as exc:
            err.print(f"line {number} is not a row or a list of rows: {exc}", markup=False)
            raise typer.Exit(2) from None
        first = value[0] if isinstance(value, list) else value
        found = first.get(key) if key else None
        messages.append((str(found) if found is not None else None, value))
    settings = cli_settings("producer")
    asyncio.run(streams.write(settings, model, messages))
    console.print(f"sent {len(messages)} message(s) to {settings.topic(f'inputs.{model}')}", markup=False)


@stream_app.command("read")
def read(
    model: Annotated[str, typer.Argument(help="Model name.")],
    group: Annotated[
        str | None, typer.Option(help="Consumer group, under <prefix>.consumer.; goes on where it stopped.")
    ] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest prediction.")] = False,
    limit: Annotated[int | None, typer.Option("--max", help="Stop after this many messages.")] = None,
    idle: Annotated[float | None, typer.Option(help="Stop after this many seconds without a message.")] = None,
) -> None:
    """Print a model's predictions as they are committed, one JSON message per line."""
    from shared.contract import topics
    from shared.ops import streams

    settings = cli_settings("consumer")
    if group is not None and not group.startswith(f"{settings.topic_prefix}.consumer."):
        group = f"{settings.topic_prefix}.consumer.{group}"
    asyncio.run(
        streams.read(
            settings,
            settings.topic(topics.outputs(model)),
            limit,
            idle=idle,
            group=group,
            from_beginning=from_beginning,
            each=lambda value: console.print(json.dumps(value), markup=False, soft_wrap=True),
        )
    )
