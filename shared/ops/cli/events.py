"""`modelbus publish`, `modelbus tail` and `modelbus dlq`: events on the bus."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

import typer

from shared.ops.cli.app import app, call_api, cli_settings
from shared.ops.cli.render import console, err
from shared.runtime.settings import Settings

publish_app = typer.Typer(help="Publish events, validated before sending.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter topic.", no_args_is_help=True)
app.add_typer(publish_app, name="publish")
app.add_typer(dlq_app, name="dlq")


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

    from shared.contract.envelope import describe_validation_error
    from shared.contract.events import DataArrived

    settings = cli_settings()
    size = None
    if sha256 is None and uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        from shared.runtime.artifacts import sha256_file

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
    from shared.contract.events import Event
    from shared.runtime.bus import Bus
    from shared.runtime.telemetry import make_tracer_provider

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
    from shared.ops import tools

    settings = cli_settings("admin")
    asyncio.run(tools.tail(settings, topic, from_beginning=from_beginning, limit=limit, idle=idle, out=console))


def _letters(consumer: str | None = None) -> list[dict[str, Any]]:
    """The dead letters, from the registry's API page by page (oldest first), optionally of one consumer."""
    found: list[dict[str, Any]] = []
    params: dict[str, object] | None = {"limit": 1000}
    while params is not None:
        page = call_api("GET", "/v1/dead-letters", params=params, raw=True)
        found += page.json()
        following = page.links.get("next", {}).get("url")
        params = dict(parse_qsl(urlsplit(following).query)) if following else None
    return [letter for letter in reversed(found) if not consumer or letter["consumer"].endswith(consumer)]


@dlq_app.command("ls")
def dlq_ls(
    consumer: Annotated[str | None, typer.Option(help="Only letters from this consumer group.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the dead letters (through the registry's API): id (partition:offset), consumer, origin and reason."""
    letters = _letters(consumer)
    if as_json:
        for letter in letters:
            console.print(json.dumps(letter), markup=False, soft_wrap=True)
        return
    for letter in letters:
        console.print(
            f"{letter['id']:<8} {letter['occurred_at'][:19]} {letter['consumer']} "
            f"{letter['original_topic']}[{letter['original_partition']}]@{letter['original_offset']} "
            f"{letter['error_type']}: {letter['reason']}",
            markup=False,
        )
    console.print(f"{len(letters)} dead letter(s)" if letters else "no dead letters", markup=False)


@dlq_app.command("show")
def dlq_show(letter_id: Annotated[str, typer.Argument(help="Dead letter id, partition:offset.")]) -> None:
    """Print a dead letter's original message body as it was received."""
    found = [letter for letter in _letters() if letter["id"] == letter_id]
    if not found:
        err.print(f"no dead letter {letter_id} (see `modelbus dlq ls`)")
        raise typer.Exit(2)
    console.print(found[0]["body"], markup=False, soft_wrap=True)


@dlq_app.command("replay")
def dlq_replay(
    letter_ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids (partition:offset).")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    consumer: Annotated[str | None, typer.Option(help="With --all: only this consumer's letters.")] = None,
    value_file: Annotated[Path | None, typer.Option(help="Replace the body with this file (a fixed message).")] = None,
    direct: Annotated[
        bool,
        typer.Option(
            "--direct",
            help="Publish straight to Kafka as the platform admin (for letters of topics the registry may not "
            "write); unaudited, so only where the API refuses.",
        ),
    ] = False,
) -> None:
    """Re-publish dead letters to their original topic, with their original key and headers,
    through the registry's API (operator; each replay audited)."""
    if value_file is not None and (replay_all or len(letter_ids or []) != 1):
        err.print("--value-file replaces one message's body: name exactly one dead letter")
        raise typer.Exit(2)
    if direct:
        _replay_directly(letter_ids, replay_all, consumer, value_file)
        return
    if replay_all:
        chosen = [letter["id"] for letter in _letters(consumer)]
    elif letter_ids:
        chosen = list(letter_ids)
    else:
        err.print("name dead letter ids (see `modelbus dlq ls`) or pass --all")
        raise typer.Exit(2)
    body = {"value": value_file.read_text()} if value_file else None
    for letter_id in chosen:
        done = call_api("POST", f"/v1/dead-letters/{letter_id}/replay", json=body)
        console.print(f"replayed {letter_id} to {done['topic']}", markup=False)
    console.print(f"{len(chosen)} message(s) replayed", markup=False)


def _replay_directly(letter_ids: list[str] | None, replay_all: bool, consumer: str | None, value: Path | None) -> None:
    from shared.ops import tools

    settings = cli_settings("admin")
    letters = asyncio.run(tools.read_dead_letters(settings))
    if replay_all:
        chosen = [item for item in letters if not consumer or item.letter.consumer.endswith(consumer)]
    elif letter_ids:
        chosen = [tools.find_letter(letters, letter_id) for letter_id in letter_ids]
    else:
        err.print("name dead letter ids (see `modelbus dlq ls`) or pass --all")
        raise typer.Exit(2)
    try:
        replayed_to = asyncio.run(
            tools.replay(settings, [item.letter for item in chosen], value=value.read_bytes() if value else None)
        )
    except ValueError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    for item, topic in zip(chosen, replayed_to, strict=True):
        console.print(f"replayed {item.id} to {topic}", markup=False)
    console.print(f"{len(chosen)} message(s) replayed directly", markup=False)


# ---------------------------------------------------------------- the registry API
