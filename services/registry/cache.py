"""Answers to `GET …/versions/{ref}` cached per process, dropped when a change to the model is
announced (PostgreSQL NOTIFY in the changing transaction)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from services.registry.store import NOTIFY_CHANNEL
from shared.runtime.tasks import cancel_and_wait

log = logging.getLogger("services.registry.api")
MAX_CACHED = 50_000


class AliasCache:
    """Answers to `GET /v1/models/{name}/versions/{ref}`, dropped when PostgreSQL says the model changed."""

    def __init__(self, database_url: str, *, keepalive_seconds: float = 5.0) -> None:
        self._dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._keepalive = keepalive_seconds
        self._entries: dict[tuple[str, str], bytes] = {}
        self._generation: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.live = False

    def get(self, model: str, ref: str) -> bytes | None:
        """The cached answer, if the cache is live and has one."""
        return self._entries.get((model, ref)) if self.live else None

    def generation(self, model: str) -> int:
        """Changes seen for `model`; read before a query, pass to put()."""
        return self._generation.get(model, 0)

    def put(self, model: str, ref: str, generation: int, answer: bytes) -> None:
        """Keep an answer computed at `generation`, unless the model changed meanwhile."""
        if self.live and self._generation.get(model, 0) == generation:
            if len(self._entries) >= MAX_CACHED:
                self._entries.clear()
            self._entries[(model, ref)] = answer

    def invalidate(self, model: str) -> None:
        """Forget a model's answers."""
        self._generation[model] = self._generation.get(model, 0) + 1
        for key in [key for key in self._entries if key[0] == model]:
            del self._entries[key]

    def _on_notify(self, _connection: object, _pid: int, _channel: str, model: str) -> None:
        self.invalidate(model)

    async def start(self) -> None:
        """Start listening (in the background; the cache is live once subscribed)."""
        self._task = asyncio.create_task(self._listen(), name="registry-cache-listener")

    async def stop(self) -> None:
        """Stop listening."""
        await cancel_and_wait(self._task)

    async def _listen(self) -> None:
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10)
                await connection.add_listener(NOTIFY_CHANNEL, self._on_notify)
                self._entries.clear()
                self.live = True
                while True:
                    await asyncio.sleep(self._keepalive)
                    await asyncio.wait_for(connection.fetchval("SELECT 1"), timeout=self._keepalive)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("registry cache listener lost its connection (%s); cache bypassed until back", exc)
            finally:
                self.live = False
                self._entries.clear()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)
            await asyncio.sleep(1)


# ---------------------------------------------------------------- request bodies
