"""Producing and reading raw Kafka messages in tests, the way a foreign client would."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.runtime.broker import aiokafka_options
from shared.runtime.settings import Settings


async def produce(settings: Settings, topic: str, value: bytes, headers: list[tuple[str, bytes]], key: bytes) -> None:
    producer = AIOKafkaProducer(**aiokafka_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def effects(sessions: async_sessionmaker[AsyncSession], event_id: str | None = None) -> int:
    """How many effect rows handlers wrote (for one event, or in all)."""
    async with sessions() as session:
        query = select(func.count()).select_from(text("it_effects"))
        if event_id is not None:
            query = query.where(text("event_id = :event_id")).params(event_id=event_id)
        return int((await session.execute(query)).scalar_one())


async def record_effect(session: AsyncSession, consumer: str, event_id: str, note: str = "") -> None:
    await session.execute(
        text("INSERT INTO it_effects (consumer, event_id, note) VALUES (:c, :e, :n)"),
        {"c": consumer, "e": event_id, "n": note},
    )
