"""The evaluator: ModelRegistered in, ModelEvaluated out, every gate with its numbers.

`HANDLERS` is what it reacts to; `build` puts it together for a process, `in_memory` for the
handler tests, both through the same `bind`.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.evaluator import handlers, store
from services.evaluator.judge import Judge, Judging
from services.evaluator.memory import MemoryStore
from shared.contract.events import ModelRegistered, ModelSpecApplied
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.bootstrap import HandlerTable, bind
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.memory import InMemoryBus
from shared.runtime.settings import Settings
from shared.runtime.telemetry import make_tracer_provider

GROUP = "evaluator"
HANDLERS: HandlerTable = {
    ModelSpecApplied: [handlers.on_spec],
    ModelRegistered: [handlers.on_registered],
}


@dataclass
class Evaluator:
    """One evaluator process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    metrics: CollectorRegistry
    judge: Judge

    async def start(self) -> None:
        """Start consuming."""
        await self.bus.start()

    async def stop(self) -> None:
        """Stop consuming; close the database and the judge's sandbox."""
        await self.bus.stop()
        await self.judge.close()
        await self.engine.dispose()


def build(settings: Settings, *, group: str = GROUP) -> Evaluator:
    """The composition root of an evaluator process."""
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    metrics = CollectorRegistry()
    bus = Bus(settings, sessions=sessions, tracer_provider=make_tracer_provider(settings), registry=metrics)
    judge = Judge(ArtifactStore(settings), model_threads=settings.model_threads)
    bus.register(bind(HANDLERS, judge=judge), group=group, store=store.SqlStore)
    return Evaluator(settings=settings, engine=engine, sessions=sessions, bus=bus, metrics=metrics, judge=judge)


def in_memory(judge: Judging, memory: MemoryStore | None = None) -> InMemoryBus[MemoryStore]:
    """The evaluator's handlers on its in-memory store, for tests with no server."""
    return InMemoryBus(bind(HANDLERS, judge=judge), memory or MemoryStore(), consumer=GROUP)
