"""Answers to `GET …/versions/{ref}` cached per process, dropped when a change to the model is
announced (PostgreSQL NOTIFY in the changing transaction)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

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


class Workspaces:
    """Each model's workspace, asked of the store at most every `seconds` per model (a model moves
    between workspaces only when an admin applies a spec naming another; this process forgets at
    once, other replicas within `seconds`). A model that does not exist belongs to `default`."""

    def __init__(self, lookup: Callable[[str], Awaitable[str | None]], *, seconds: float = 5.0) -> None:
        self.lookup = lookup
        self.seconds = seconds
        self._known: dict[str, tuple[float, str]] = {}

    async def of(self, model: str) -> str:
        now = time.monotonic()
        kept = self._known.get(model)
        if kept is not None and now - kept[0] < self.seconds:
            return kept[1]
        found = await self.lookup(model) or "default"
        if len(self._known) >= MAX_CACHED:
            self._known.clear()
        self._known[model] = (now, found)
        return found

    def forget(self, model: str) -> None:
        self._known.pop(model, None)
