"""Retention on the real PostgreSQL: a service's bus deletes its own consumer groups' inbox rows
past `inbox_retention_seconds` and its platform's published outbox rows past
`outbox_retention_seconds`, and nothing else: other services' inboxes, other platforms' rows,
unpublished rows and recent ones stay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.contract.events import DataArrived, Event
from shared.runtime.bus import Bus
from shared.runtime.db import InboxRow, OutboxRow
from shared.runtime.settings import Settings


async def noop(event: Event, uow: object) -> list[Event]:
    return []


async def test_a_bus_sweeps_its_own_old_inbox_and_published_outbox_rows_and_nothing_else(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tuned = settings.model_copy(update={"inbox_retention_seconds": 3600.0, "outbox_retention_seconds": 600.0})
    bus = Bus(tuned, sessions=sessions)
    bus.register({DataArrived: [noop]}, group="retention")
    [mine] = bus.subscriptions()
    theirs = f"{settings.topic_prefix}.someone-else"
    now = datetime.now(UTC)
    old, recent = now - timedelta(hours=2), now - timedelta(minutes=5)
    other_platform = f"other-{uuid.uuid4().hex[:6]}.data-arrived"
    own_topic = settings.topic("data-arrived")

    def outbox(topic: str, published: datetime | None) -> OutboxRow:
        return OutboxRow(
            event_id=uuid.uuid4().hex, topic=topic, key=b"k", value=b"{}", headers=[], published_at=published
        )

    async with sessions() as session, session.begin():
        session.add_all(
            [
                InboxRow(consumer=mine, event_id="old", event_type="DataArrived", handled_at=old),
                InboxRow(consumer=mine, event_id="recent", event_type="DataArrived", handled_at=recent),
                InboxRow(consumer=theirs, event_id="old", event_type="DataArrived", handled_at=old),
            ]
        )
        rows = {
            "published long ago": outbox(own_topic, old),
            "published just now": outbox(own_topic, now),
            "never published": outbox(own_topic, None),
            "another platform's": outbox(other_platform, old),
        }
        session.add_all(rows.values())
    swept = await bus.sweep()
    assert (swept.inbox, swept.outbox) == (1, 1)
    async with sessions() as session:
        left = {
            (r.consumer, r.event_id)
            for r in (await session.scalars(select(InboxRow).where(InboxRow.consumer.in_([mine, theirs])))).all()
        }
        kept = {
            r.event_id
            for r in (
                await session.scalars(select(OutboxRow).where(OutboxRow.topic.in_([own_topic, other_platform])))
            ).all()
        }
    assert left == {(mine, "recent"), (theirs, "old")}
    assert kept == {rows[k].event_id for k in ("published just now", "never published", "another platform's")}
