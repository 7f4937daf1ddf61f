"""Operator tools behind the CLI: following a topic, reading and replaying dead letters."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console

from shared.contract import topics
from shared.contract.envelope import EnvelopeError, decode
from shared.contract.events import DeadLettered
from shared.runtime.broker import aiokafka_options
from shared.runtime.settings import Settings


def full_topic(settings: Settings, name: str) -> str:
    """A catalog name (data-arrived) or a full topic name, as the full name."""
    return settings.topic(name) if name in topics.BY_NAME else name


async def _assigned(settings: Settings, topic: str) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [p["partition"] for d in described if not d.get("error_code") for p in d["partitions"]]
    if not partitions:
        raise LookupError(f"topic {topic} does not exist (is the stack up? `modelbus stack status`)")
    consumer = AIOKafkaConsumer(**aiokafka_options(settings), enable_auto_commit=False)
    await consumer.start()
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    return consumer, assigned


async def tail(
    settings: Settings,
    name: str,
    *,
    from_beginning: bool,
    limit: int | None,
    idle: float | None,
    out: Console,
    render: Callable[[ConsumerRecord[bytes, bytes]], str | None] | None = None,
) -> int:
    """Print messages of a topic with their headers until `limit` or `idle` seconds of silence.

    With `render`, each message is printed as the one line it returns instead (None: skipped).
    """
    topic = full_topic(settings, name)
    consumer, assigned = await _assigned(settings, topic)
    seen = 0
    try:
        if from_beginning:
            await consumer.seek_to_beginning(*assigned)
        else:
            await consumer.seek_to_end(*assigned)
        last = time.monotonic()
        while limit is None or seen < limit:
            batch = await consumer.getmany(timeout_ms=500)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                if idle is not None and time.monotonic() - last > idle:
                    break
                continue
            last = time.monotonic()
            for record in sorted(records, key=lambda r: r.timestamp):
                if render is not None:
                    line = render(record)
                    if line is not None:
                        out.print(line, markup=False)
                        seen += 1
                    if limit is not None and seen >= limit:
                        break
                    continue
                headers = {name: value.decode("utf-8", "replace") for name, value in record.headers or ()}
                stamp = time.strftime("%H:%M:%S", time.localtime(record.timestamp / 1000))
                out.print(
                    f"{stamp} {record.topic}[{record.partition}]@{record.offset} "
                    f"key={(record.key or b'').decode('utf-8', 'replace')} "
                    f"{headers.get('ce_type', '(no ce_type)')} id={headers.get('ce_id', '-')}",
                    markup=False,
                    style="bold",
                )
                for header, value in headers.items():
                    out.print(f"  {header}: {value}", markup=False, style="dim")
                try:
                    body = json.dumps(json.loads(record.value or b""), indent=2)
                except ValueError:
                    body = repr(record.value)
                out.print(body, markup=False)
                seen += 1
                if limit is not None and seen >= limit:
                    break
    finally:
        await consumer.stop()
    return seen


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """A dead letter and where it sits in the dead-letter topic."""

    id: str
    letter: DeadLettered


async def read_all(settings: Settings, name: str, *, timeout: float = 10.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record currently in a topic (catalog or full name), oldest first per partition."""
    consumer, assigned = await _assigned(settings, full_topic(settings, name))
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        deadline = time.monotonic() + timeout
        while [tp for tp in assigned if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {full_topic(settings, name)} took longer than {timeout} s")
            batch = await consumer.getmany(timeout_ms=500)
            records += [r for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    return records


async def read_dead_letters(settings: Settings) -> list[StoredLetter]:
    """Every dead letter currently in the topic, oldest first per partition."""
    letters: list[StoredLetter] = []
    for record in await read_all(settings, topics.DEAD_LETTER):
        try:
            envelope = decode(record.value, list(record.headers or ()), allowed=frozenset({"DeadLettered"}))
        except EnvelopeError:
            continue
        assert isinstance(envelope.event, DeadLettered)
        letters.append(StoredLetter(f"{record.partition}:{record.offset}", envelope.event))
    return letters


def find_letter(letters: list[StoredLetter], letter_id: str) -> StoredLetter:
    """The letter with that partition:offset id."""
    for item in letters:
        if item.id == letter_id:
            return item
    raise LookupError(f"no dead letter {letter_id!r}; `modelbus dlq ls` lists them")


def original_value(letter: DeadLettered) -> bytes:
    """The original message body."""
    return base64.b64decode(letter.original_value_b64)


def print_dead_letters(letters: list[StoredLetter], *, out: Console, as_json: bool) -> None:
    """A table of dead letters, or JSON lines."""
    if as_json:
        for item in letters:
            out.print(json.dumps({"id": item.id, **item.letter.model_dump(mode="json")}), markup=False)
        return
    if not letters:
        out.print("no dead letters", markup=False)
        return
    for item in letters:
        letter = item.letter
        out.print(
            f"{item.id:<8} {letter.occurred_at:%Y-%m-%d %H:%M:%S} {letter.consumer} "
            f"{letter.original_topic}[{letter.original_partition}]@{letter.original_offset} "
            f"{letter.error_type}: {letter.reason}",
            markup=False,
        )
    out.print(f"{len(letters)} dead letter(s)", markup=False)


async def replay(settings: Settings, letters: list[DeadLettered], *, value: bytes | None = None) -> list[str]:
    """Re-publish dead letters to their original topics (optionally one with a fixed body), in order."""
    producer = AIOKafkaProducer(**aiokafka_options(settings), enable_idempotence=True, acks="all")
    await producer.start()
    try:
        truncated = [letter for letter in letters if letter.original_truncated] if value is None else []
        if truncated:
            first = truncated[0]
            raise ValueError(
                f"the dead letter of {first.original_topic}@{first.original_offset} kept only the start of its "
                f"{first.original_size_bytes}-byte body (too large to carry); replay it with --value-file"
            )
        for letter in letters:
            headers = [(name, base64.b64decode(data)) for name, data in letter.original_headers]
            headers.append(("modelbus_replayed", b"1"))
            key = base64.b64decode(letter.original_key_b64) if letter.original_key_b64 else None
            await asyncio.wait_for(
                producer.send_and_wait(
                    letter.original_topic, value or original_value(letter), key=key, headers=headers
                ),
                timeout=30,
            )
    finally:
        await producer.stop()
    return [letter.original_topic for letter in letters]
