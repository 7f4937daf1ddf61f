"""The topics as an operator reads them: every record of a topic, the dead letters, and their replay
(what the CLI's `modelbus dlq` and the console's dead-letter page do)."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.contract import topics
from shared.contract.envelope import EnvelopeError, decode
from shared.contract.events import DeadLettered
from shared.runtime.broker import aiokafka_options
from shared.runtime.settings import Settings


def full_topic(settings: Settings, name: str) -> str:
    """A catalog name (data-arrived) or a full topic name, as the full name."""
    return settings.topic(name) if name in topics.BY_NAME else name


async def assigned_consumer(settings: Settings, topic: str) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
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


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """A dead letter and where it sits in the dead-letter topic."""

    id: str
    letter: DeadLettered


async def read_all(settings: Settings, name: str, *, timeout: float = 10.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record currently in a topic (catalog or full name), oldest first per partition."""
    consumer, assigned = await assigned_consumer(settings, full_topic(settings, name))
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
