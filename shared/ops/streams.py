"""Streaming inference from outside, as a user's services do it: feature records written to a
model's input topic (as the `producer` principal on the local stack), its predictions read from the
output topic read-committed in a consumer group of one's own (`<prefix>.consumer.*`, as the
`consumer` principal). `modelbus stream send` and `modelbus stream read` are these."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.contract import topics
from shared.runtime.broker import aiokafka_options
from shared.runtime.settings import Settings


async def write(
    settings: Settings, model: str, messages: Sequence[tuple[str | None, Any]], *, pace: float = 0.0
) -> None:
    """Write (key, value) messages to the model's input topic (a value that is bytes goes as it
    is, anything else as JSON), `pace` seconds apart if given."""
    producer = AIOKafkaProducer(**aiokafka_options(settings), acks="all", linger_ms=5)
    await producer.start()
    try:
        topic = settings.topic(topics.inputs(model))
        sends = []
        for key, value in messages:
            body = value if isinstance(value, bytes) else orjson.dumps(value)
            sends.append(await producer.send(topic, body, key=key.encode() if key is not None else None))
            if pace:
                await asyncio.sleep(pace)
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def read(
    settings: Settings,
    topic: str,
    wanted: int | Callable[[list[Any]], bool] | None = None,
    *,
    timeout: float | None = None,
    settle: float = 0.0,
    idle: float | None = None,
    committed: bool = True,
    group: str | None = None,
    from_beginning: bool = True,
    each: Callable[[Any], None] | None = None,
) -> list[Any]:
    """The messages of a full topic name, parsed, read-committed (or, to see what aborted
    transactions held, uncommitted), until `wanted` have come (or `wanted(found)` holds) and
    nothing more came for `settle` seconds, or nothing came for `idle` seconds, or `timeout`
    passed (none of them: until cancelled). In `group` (which must start with
    `<prefix>.consumer.`), its offsets committed as it reads, so a reader of that group goes on
    where it stopped; else in a group of its own, from the start or the end. `each` sees every
    message as it comes."""
    enough = wanted if callable(wanted) else (lambda found: wanted is not None and len(found) >= wanted)
    consumer = AIOKafkaConsumer(
        topic,
        **aiokafka_options(settings),
        group_id=group or f"{settings.topic_prefix}.consumer.{uuid.uuid4().hex[:6]}",
        isolation_level="read_committed" if committed else "read_uncommitted",
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=group is not None,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        began = last = time.monotonic()
        while timeout is None or time.monotonic() - began < timeout:
            # A count is a count: no more is fetched than it lacks (a group's reader goes on after it).
            rest = max(wanted - len(found), 1) if isinstance(wanted, int) else None
            batch = await consumer.getmany(timeout_ms=500, max_records=rest)
            for record in (r for records in batch.values() for r in records):
                value = orjson.loads(record.value) if record.value is not None else None
                found.append(value)
                if each is not None:
                    each(value)
                last = time.monotonic()
            if enough(found) and time.monotonic() - last >= settle:
                break
            if idle is not None and time.monotonic() - last >= idle:
                break
    finally:
        await consumer.stop()
    return found
