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
    records = await read_all(settings, topics.DEAD_LETTER)
    return [letter for record in records if (letter := _letter(record)) is not None]


def _letter(record: ConsumerRecord[bytes, bytes]) -> StoredLetter | None:
    try:
        envelope = decode(record.value, list(record.headers or ()), allowed=frozenset({"DeadLettered"}))
    except EnvelopeError:
        return None
    assert isinstance(envelope.event, DeadLettered)
    return StoredLetter(f"{record.partition}:{record.offset}", envelope.event)


Cursor = dict[int, int]  # partition -> the first offset the next page must not read


def parse_cursor(text: str) -> Cursor:
    """`0:120,1:98` (what a page's `next` says) as a cursor; ValueError naming the fault."""
    try:
        pairs = [part.split(":") for part in text.split(",") if part]
        return {int(partition): int(offset) for partition, offset in pairs}
    except ValueError:
        raise ValueError(
            f"{text[:60]!r} is not a page cursor: write partition:offset,... as a page's next link gives"
        ) from None


def write_cursor(cursor: Cursor) -> str:
    return ",".join(f"{partition}:{offset}" for partition, offset in sorted(cursor.items()))


async def dead_letter_page(
    settings: Settings, limit: int, before: Cursor | None = None, *, timeout: float = 10.0
) -> tuple[list[StoredLetter], Cursor | None]:
    """The `limit` newest dead letters older than `before`, newest first, and the cursor of the
    next page (None at the oldest). At most `limit` records are read from each partition, however
    long the topic is."""
    consumer, assigned = await assigned_consumer(settings, full_topic(settings, topics.DEAD_LETTER))
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        begins, ends = await consumer.beginning_offsets(assigned), await consumer.end_offsets(assigned)
        stops = {tp: min(ends[tp], (before or {}).get(tp.partition, ends[tp])) for tp in assigned}
        wanted = [tp for tp in assigned if stops[tp] > begins[tp]]
        consumer.pause(*[tp for tp in assigned if tp not in wanted])
        for tp in wanted:
            consumer.seek(tp, max(begins[tp], stops[tp] - limit))
        deadline = time.monotonic() + timeout
        while reading := [tp for tp in wanted if await consumer.position(tp) < stops[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {full_topic(settings, topics.DEAD_LETTER)} took longer than {timeout} s")
            consumer.pause(*[tp for tp in wanted if tp not in reading])
            batch = await consumer.getmany(*reading, timeout_ms=500)
            found += [r for tp, rs in batch.items() for r in rs if r.offset < stops[tp]]
    finally:
        await consumer.stop()
    found.sort(key=lambda r: (r.timestamp, r.partition, r.offset), reverse=True)
    page = found[:limit]
    cursor = {tp.partition: stops[tp] for tp in assigned}
    for record in page:
        cursor[record.partition] = min(cursor[record.partition], record.offset)
    more = any(cursor[tp.partition] > begins[tp] for tp in assigned)
    return [letter for r in page if (letter := _letter(r)) is not None], cursor if more else None


async def read_letter(settings: Settings, letter_id: str, *, timeout: float = 10.0) -> StoredLetter:
    """The dead letter at `partition:offset`, read alone; LookupError when there is none."""
    try:
        partition, offset = (int(part) for part in letter_id.split(":"))
    except ValueError:
        raise LookupError(f"no dead letter {letter_id[:60]!r}: an id is partition:offset (`modelbus dlq ls`)") from None
    consumer, assigned = await assigned_consumer(settings, full_topic(settings, topics.DEAD_LETTER))
    try:
        tp = next((tp for tp in assigned if tp.partition == partition), None)
        if (
            tp is None
            or not (await consumer.beginning_offsets([tp]))[tp] <= offset < (await consumer.end_offsets([tp]))[tp]
        ):
            raise LookupError(f"no dead letter {letter_id!r}; `modelbus dlq ls` lists them")
        consumer.assign([tp])
        consumer.seek(tp, offset)
        record = await asyncio.wait_for(consumer.getone(tp), timeout)
    finally:
        await consumer.stop()
    letter = _letter(record) if record.offset == offset else None
    if letter is None:
        raise LookupError(f"{letter_id!r} is not a dead letter modelbus can read")
    return letter


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
