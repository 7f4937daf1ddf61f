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


@app.command("config")
def config_table() -> None:
    """Print every setting (environment variable, default, meaning) as a Markdown table."""
    from shared.settings import markdown_table

    console.print(markdown_table(), markup=False)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION."""
    from alembic import command

    from shared.db import alembic_config

    command.upgrade(alembic_config(_settings()), revision)
    console.print(f"database at {revision}")


@schemas_app.command("generate")
def schemas_generate(
    folder: Annotated[Path, typer.Option(help="Where schemas/ lives.")] = Path("schemas"),
    check: Annotated[bool, typer.Option("--check", help="Only report stale files; exit 1 if any.")] = False,
) -> None:
    """Write the JSON Schema of every event, the envelope and the AsyncAPI document."""
    from shared import contract

    if check:
        stale = contract.stale(folder)
        for path in stale:
            console.print(f"stale: {folder / path}", markup=False)
        if stale:
            err.print("run `modelbus schemas generate` and commit the result")
            raise typer.Exit(1)
        console.print(f"{folder} is up to date", markup=False)
        return
    written = contract.write(folder)
    console.print(f"wrote {len(written)} files to {folder}", markup=False)


@publish_app.command("data-arrived")
def publish_data_arrived(
    dataset: Annotated[str, typer.Option(help="Dataset name (the Kafka key).")],
    version: Annotated[str, typer.Option(help="Version label of this dataset version.")],
    uri: Annotated[str, typer.Option(help="s3://bucket/key or file:///path of the data.")],
    sha256: Annotated[str | None, typer.Option(help="SHA-256 of the file; computed for local files.")] = None,
    data_format: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    rows: Annotated[int | None, typer.Option(help="Row count, if known.")] = None,
) -> None:
    """Validate and publish a DataArrived event; prints its ce_id."""
    from pydantic import ValidationError

    from shared.envelope import describe_validation_error
    from shared.events import DataArrived

    settings = _settings()
    size = None
    if sha256 is None and uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        from shared.artifacts import sha256_file

        local = Path(unquote(urlparse(uri).path))
        if not local.is_file():
            err.print(f"no file at {local}")
            raise typer.Exit(2)
        sha256, size = sha256_file(local), local.stat().st_size
    try:
        event = DataArrived(
            dataset=dataset,
            version=version,
            uri=uri,
            sha256=sha256,
            format=data_format,
            row_count=rows,
            size_bytes=size,
            producer="modelbus-cli",
        )
    except ValidationError as exc:
        err.print(f"not published: {describe_validation_error(exc)}", markup=False)
        raise typer.Exit(2) from None
    event_id = asyncio.run(_publish(settings, event))
    console.print(
        f"published DataArrived {dataset}@{version} to {settings.topic(event.topic)} ce_id={event_id}", markup=False
    )


async def _publish(settings: Settings, event: object) -> str:
    from shared.bus import Bus
    from shared.events import Event
    from shared.telemetry import make_tracer_provider

    assert isinstance(event, Event)
    provider = make_tracer_provider(settings.model_copy(update={"service_name": "modelbus-cli"}))
    bus = Bus(settings.model_copy(update={"service_name": "cli"}), tracer_provider=provider)
    await bus.broker.start()
    try:
        tracer = provider.get_tracer("modelbus.cli")
        with tracer.start_as_current_span(f"publish {event.event_type}"):
            return await bus.publish(event)
    finally:
        await bus.broker.stop()
        provider.shutdown()


@app.command("tail")
def tail(
    topic: Annotated[str, typer.Argument(help="Catalog name (data-arrived) or full topic name.")],
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest message.")] = False,
    limit: Annotated[int | None, typer.Option("--max", help="Stop after this many messages.")] = None,
    idle: Annotated[float | None, typer.Option(help="Stop after this many seconds without a message.")] = None,
) -> None:
    """Follow a topic, pretty-printing each event with its headers."""
    from shared import tools

    asyncio.run(tools.tail(_settings(), topic, from_beginning=from_beginning, limit=limit, idle=idle, out=console))


@dlq_app.command("ls")
def dlq_ls(
    consumer: Annotated[str | None, typer.Option(help="Only letters from this consumer group.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the dead letters: id (partition:offset), consumer, origin and reason."""
    from shared import tools

    letters = asyncio.run(tools.read_dead_letters(_settings()))
    if consumer:
        letters = [item for item in letters if item.letter.consumer.endswith(consumer)]
    tools.print_dead_letters(letters, out=console, as_json=as_json)


@dlq_app.command("show")
def dlq_show(letter_id: Annotated[str, typer.Argument(help="Dead letter id, partition:offset.")]) -> None:
    """Print a dead letter's original message body as it was received."""
    from shared import tools

    item = tools.find_letter(asyncio.run(tools.read_dead_letters(_settings())), letter_id)
    console.print(tools.original_value(item.letter).decode("utf-8", "replace"), markup=False)


@dlq_app.command("replay")
def dlq_replay(
    letter_ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids (partition:offset).")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    consumer: Annotated[str | None, typer.Option(help="With --all: only this consumer's letters.")] = None,
    value_file: Annotated[Path | None, typer.Option(help="Replace the body with this file (a fixed message).")] = None,
) -> None:
    """Re-publish dead letters to their original topic, with their original key and headers."""
    from shared import tools

    settings = _settings()
    letters = asyncio.run(tools.read_dead_letters(settings))
    if replay_all:
        chosen = [item for item in letters if not consumer or item.letter.consumer.endswith(consumer)]
    elif letter_ids:
        chosen = [tools.find_letter(letters, letter_id) for letter_id in letter_ids]
    else:
        err.print("name dead letter ids (see `modelbus dlq ls`) or pass --all")
        raise typer.Exit(2)
    if value_file is not None and len(chosen) != 1:
        err.print("--value-file replaces one message's body: name exactly one dead letter")
        raise typer.Exit(2)
    body = value_file.read_bytes() if value_file else None
    replayed_to = asyncio.run(tools.replay(settings, [item.letter for item in chosen], value=body))
    for item, topic in zip(chosen, replayed_to, strict=True):
        console.print(f"replayed {item.id} to {topic}", markup=False)
    console.print(f"{len(chosen)} message(s) replayed", markup=False)


def main() -> None:
    """Entry point of the `modelbus` console script."""
    try:
        app()
    except LookupError as exc:
        err.print(str(exc).strip("'\""), markup=False)
        raise SystemExit(2) from None
