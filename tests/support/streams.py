"""Streaming inference in the tests: what shared.ops.streams does as a user's services do it, with
the local stack's `producer` and `consumer` principals, and what the tests look at besides."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.contract import topics
from shared.ops import credentials, streams
from shared.runtime.broker import aiokafka_options
from shared.runtime.settings import Settings


def _as(settings: Settings, principal: str) -> dict[str, Any]:
    return aiokafka_options(credentials.as_principal(settings, principal))  # type: ignore[arg-type]


async def write(
    settings: Settings, model: str, messages: Sequence[tuple[str | None, Any]], *, pace: float = 0.0
) -> None:
    """Write (key, value) messages to the model's input topic as the `producer` principal."""
    await streams.write(credentials.as_principal(settings, "producer"), model, messages, pace=pace)


async def read(
    settings: Settings,
    topic: str,
    wanted: int | Callable[[list[Any]], bool] | None,
    *,
    timeout: float,
    settle: float = 3.0,
    idle: float | None = None,
    committed: bool = True,
) -> list[Any]:
    """A topic's messages as the `consumer` principal (shared.ops.streams.read)."""
    reader = credentials.as_principal(settings, "consumer")
    return await streams.read(reader, topic, wanted, timeout=timeout, settle=settle, idle=idle, committed=committed)


async def until_end(settings: Settings, topic: str, count: int, *, timeout: float) -> int:
    """Wait until a full topic name holds `count` records, committed or not (the sum of its
    partitions' ends, looked at every 10 ms); how many it holds."""
    consumer = AIOKafkaConsumer(**_as(settings, "consumer"), group_id=None)
    await consumer.start()
    try:
        held = 0
        for _ in range(int(timeout * 100)):
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            held = sum((await consumer.end_offsets(partitions)).values()) if partitions else 0
            if held >= count:
                break
            await asyncio.sleep(0.01)
        return held
    finally:
        await consumer.stop()


async def logged(settings: Settings, model: str, ids: set[str], *, timeout: float) -> set[str]:
    """Which of `ids` the monitor was told of (the PredictionsLogged of `model`), read from the
    start of the topic as the monitor's principal until all came or the timeout."""
    consumer = AIOKafkaConsumer(
        settings.topic(topics.PREDICTIONS_LOGGED),
        **_as(settings, "monitor"),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: set[str] = set()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not ids <= found:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = orjson.loads(record.value or b"{}")
                    if event.get("model") == model:
                        found.update(set(event.get("request_id", [])) & ids)
    finally:
        await consumer.stop()
    return found
