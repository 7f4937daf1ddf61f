"""What the bus keeps only for a while: the inbox (the ce_ids a consumer group handled) and the
outbox rows already published. A bus sweeps its own, every `retention_sweep_seconds`:

- inbox rows of its consumer groups handled more than `inbox_retention_seconds` ago; the default
  (8 days) outlives the topics' retention (7 days), so a message Kafka can still deliver again is
  always recognised;
- published outbox rows of its platform older than `outbox_retention_seconds` (1 day).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.runtime.db import InboxRow, OutboxRow
from shared.runtime.settings import Settings

log = logging.getLogger("shared.runtime.retention")


@dataclass(frozen=True)
class Swept:
    """Rows one sweep deleted."""

    inbox: int
    outbox: int


async def sweep(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, groups: Collection[str], now: datetime
) -> Swept:
    """Delete this bus's expired inbox rows (its `groups`) and its platform's old published outbox rows."""
    async with sessions() as session, session.begin():
        inbox = 0
        if groups:
            handled_before = now - timedelta(seconds=settings.inbox_retention_seconds)
            done = await session.execute(
                delete(InboxRow).where(InboxRow.consumer.in_(list(groups)), InboxRow.handled_at < handled_before)
            )
            inbox = int(getattr(done, "rowcount", 0) or 0)
        published_before = now - timedelta(seconds=settings.outbox_retention_seconds)
        done = await session.execute(
            delete(OutboxRow).where(
                OutboxRow.published_at < published_before,
                OutboxRow.topic.startswith(f"{settings.topic_prefix}.", autoescape=True),
            )
        )
        outbox = int(getattr(done, "rowcount", 0) or 0)
    if inbox or outbox:
        log.info("retention: %d inbox and %d outbox rows deleted", inbox, outbox)
    return Swept(inbox, outbox)
