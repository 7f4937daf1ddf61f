"""PostgreSQL LISTEN on one channel, kept up: a process learns at once what another committed
(a transaction's `pg_notify` is delivered when it commits). The connection is checked every few
seconds and made again when lost; while it is down `on_live(False)` says so, and the process falls
back to what it does without notifications (a cache bypassed, a queue polled)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from shared.runtime.tasks import cancel_and_wait

log = logging.getLogger("shared.runtime.notify")


class Listener:
    """Calls `on_notify(payload)` for each notification on `channel`."""

    def __init__(
        self,
        database_url: str,
        channel: str,
        on_notify: Callable[[str], None],
        *,
        on_live: Callable[[bool], None] | None = None,
        keepalive_seconds: float = 5.0,
    ) -> None:
        self._dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.channel = channel
        self._on_notify = on_notify
        self._on_live = on_live or (lambda _: None)
        self._keepalive = keepalive_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start listening in the background."""
        self._task = asyncio.create_task(self._listen(), name=f"listen-{self.channel}")

    async def stop(self) -> None:
        """Stop listening."""
        await cancel_and_wait(self._task)

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_notify(payload)

    async def _listen(self) -> None:
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10)
                await connection.add_listener(self.channel, self._notified)
                self._on_live(True)
                while True:
                    await asyncio.sleep(self._keepalive)
                    await asyncio.wait_for(connection.fetchval("SELECT 1"), timeout=self._keepalive)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening on %s: connection lost (%s); trying again", self.channel, exc)
            finally:
                self._on_live(False)
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)
            await asyncio.sleep(1)
