"""The outbox relay: publishes, in order and after their transaction committed, the events that
handlers staged in the `outbox` table (at-least-once; consumers drop duplicates by ce_id)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.propagate import extract
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.contract.envelope import Headers
from shared.runtime.db import OutboxRow, outbox_headers
from shared.runtime.settings import Settings

log = logging.getLogger("shared.runtime.bus")
RELAY_TIMEOUT_SECONDS = 10.0
RELAY_HOLD_SECONDS = 30
Send = Callable[[str, bytes | None, bytes, Headers], Awaitable["asyncio.Future[Any]"]]


class OutboxRelay:
    """Publishes the outbox rows one service (its service_name) staged for one platform (its topic prefix)."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], send: Send) -> None:
        self.settings = settings
        self.sessions = sessions
        self._send_bytes = send
        self.wake_event = asyncio.Event()
        self._held: dict[str, float] = {}

    async def relay_once(self, *, limit: int = 200) -> int:
        """Publish staged outbox rows of this platform (its topic prefix) in order; returns how many.

        A topic the broker refuses (deleted, not authorised) is held back for a while, with its
        rows, and does not block the others.
        """
        assert self.sessions is not None
        now = time.monotonic()
        self._held = {topic: until for topic, until in self._held.items() if until > now}
        query = (
            select(OutboxRow)
            .where(
                OutboxRow.published_at.is_(None),
                OutboxRow.topic.startswith(f"{self.settings.topic_prefix}.", autoescape=True),
                # This service's rows: another's may be on topics this principal may not write.
                or_(OutboxRow.sender == self.settings.service_name, OutboxRow.sender.is_(None)),
            )
            .order_by(OutboxRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if self._held:
            query = query.where(OutboxRow.topic.not_in(list(self._held)))
        async with self.sessions() as session, session.begin():
            rows = (await session.scalars(query)).all()
            try:
                await asyncio.wait_for(self._publish_rows(rows), timeout=RELAY_TIMEOUT_SECONDS)
                published = list(rows)
            except Exception as exc:
                # One by one, so that a refused topic holds back only its own rows (what went
                # out before the failure may go twice; consumers drop duplicates by ce_id).
                log.warning("outbox relay: batch of %d failed (%r); publishing one by one", len(rows), exc)
                published = await self._relay_one_by_one(rows)
            for row in published:
                row.published_at = datetime.now(UTC)
        return len(published)

    async def _publish_rows(self, rows: Sequence[OutboxRow]) -> None:
        # Sent in order (an unknown topic blocks already here, waiting for its metadata),
        # acknowledged together.
        acks = [await self._send_row(row) for row in rows]
        await asyncio.gather(*acks)

    async def _send_row(self, row: OutboxRow) -> asyncio.Future[Any]:
        headers = outbox_headers(row)
        carrier = {n: v.decode() for n, v in headers if n in ("traceparent", "tracestate")}
        token = otel_context.attach(extract(carrier))
        try:
            return await self._send_bytes(row.topic, row.key, row.value, [h for h in headers if h[0] not in carrier])
        finally:
            otel_context.detach(token)

    async def _relay_one_by_one(self, rows: Sequence[OutboxRow]) -> list[OutboxRow]:
        published = []
        for row in rows:
            if row.topic in self._held:
                continue
            try:
                await asyncio.wait_for(self._publish_rows([row]), timeout=RELAY_TIMEOUT_SECONDS)
            except Exception as exc:
                self._held[row.topic] = time.monotonic() + RELAY_HOLD_SECONDS
                log.error(
                    "outbox relay: %s refused %s (%r); its rows wait %d s",
                    row.topic,
                    row.event_id,
                    exc,
                    RELAY_HOLD_SECONDS,
                )
                continue
            published.append(row)
        return published

    async def run_forever(self) -> None:
        """Publish what commits stage, when woken or at every poll, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake_event.wait(), timeout=self.settings.outbox_poll_seconds)
            self.wake_event.clear()
            try:
                while await self.relay_once() > 0:
                    pass
            except Exception:
                log.warning("outbox relay failed; retrying", exc_info=True)
                await asyncio.sleep(self.settings.outbox_poll_seconds)
