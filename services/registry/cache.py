"""Answers to `GET …/versions/{ref}` cached per process, dropped when a change to the model is
announced (PostgreSQL NOTIFY in the changing transaction)."""

from __future__ import annotations

import logging

from services.registry.store import NOTIFY_CHANNEL
from shared.runtime.notify import Listener

log = logging.getLogger("services.registry.api")
MAX_CACHED = 50_000


class AliasCache:
    """Answers to `GET /v1/models/{name}/versions/{ref}`, dropped when PostgreSQL says the model changed."""

    def __init__(self, database_url: str, *, keepalive_seconds: float = 5.0) -> None:
        self._entries: dict[tuple[str, str], bytes] = {}
        self._generation: dict[str, int] = {}
        self.live = False
        self._listener = Listener(
            database_url, NOTIFY_CHANNEL, self.invalidate, on_live=self._live, keepalive_seconds=keepalive_seconds
        )

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

    def _live(self, live: bool) -> None:
        self.live = live
        self._entries.clear()

    async def start(self) -> None:
        """Start listening (in the background; the cache is live once subscribed)."""
        await self._listener.start()

    async def stop(self) -> None:
        """Stop listening."""
        await self._listener.stop()


# ---------------------------------------------------------------- request bodies
