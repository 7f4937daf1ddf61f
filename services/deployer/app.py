"""The deployer's rollout controller: approved versions in, rollout transitions out.

It consumes specs (the rollout policy), registrations (artifacts), evaluations (approved versions
start rollouts), canary analyses (advance, hold, roll back) and operator commands; every
transition is persisted and announced as `RolloutChanged` in the same transaction.
`HANDLERS` is what it reacts to; `build` puts it together for a process, `in_memory` for the
handler tests, both through the same `bind`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.deployer import handlers, store
from services.deployer.handlers import Clock, utcnow
from services.deployer.materialize import Materializer
from services.deployer.memory import MemoryStore
from shared.contract.events import CanaryAnalyzed, ModelEvaluated, ModelRegistered, ModelSpecApplied, RolloutCommanded
from shared.runtime import feast
from shared.runtime.bootstrap import HandlerTable, bind
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.memory import InMemoryBus
from shared.runtime.settings import Settings
from shared.runtime.tasks import cancel_and_wait
from shared.runtime.telemetry import make_tracer_provider

GROUP = "deployer"
HANDLERS: HandlerTable = {
    ModelSpecApplied: [handlers.on_spec],
    ModelRegistered: [handlers.on_registered],
    ModelEvaluated: [handlers.on_evaluated],
    CanaryAnalyzed: [handlers.on_analysis],
    RolloutCommanded: [handlers.on_command],
}


@dataclass
class Deployer:
    """One deployer (rollout controller) process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    metrics: CollectorRegistry
    materializer: Materializer
    scheduled: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start consuming and relaying, and the Feast materialization schedule (if set)."""
        await self.bus.start()
        if self.settings.feast_materialize_seconds > 0:
            self.scheduled = asyncio.get_running_loop().create_task(self.materializer.run_forever())

    async def stop(self) -> None:
        """Stop the schedule and consuming; close the database."""
        await cancel_and_wait(self.scheduled)
        await self.bus.stop()
        await self.engine.dispose()


def build(settings: Settings, *, group: str = GROUP, clock: Clock = utcnow) -> Deployer:
    """The composition root of a deployer process."""
    feast.configure(settings)
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    metrics = CollectorRegistry()
    bus = Bus(settings, sessions=sessions, tracer_provider=make_tracer_provider(settings), registry=metrics)
    bus.register(bind(HANDLERS, clock=clock), group=group, store=store.SqlStore)
    materializer = Materializer.of(settings, bus.tracer, metrics)
    return Deployer(
        settings=settings, engine=engine, sessions=sessions, bus=bus, metrics=metrics, materializer=materializer
    )


def in_memory(*, clock: Clock = utcnow, memory: MemoryStore | None = None) -> InMemoryBus[MemoryStore]:
    """The deployer's handlers on its in-memory store, for tests with no server."""
    return InMemoryBus(bind(HANDLERS, clock=clock), memory or MemoryStore(), consumer=GROUP)
