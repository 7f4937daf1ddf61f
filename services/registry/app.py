"""The registry: its handlers on the bus, its HTTP API, and the one composition root.

`HANDLERS` is what it reacts to; `build` puts it together for a process, `in_memory` for the
handler tests, both through the same `bind`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.registry import handlers, store
from services.registry.api import make_api
from services.registry.cache import AliasCache
from services.registry.memory import MemoryStore
from shared.contract.events import (
    AlertRaised,
    AlertResolved,
    DataArrived,
    DriftDetected,
    ModelEvaluated,
    ModelRegistered,
    ModelTrained,
    PerformanceDegraded,
    RetrainRequested,
    RetrainSkipped,
    RolloutChanged,
    RolloutCommanded,
    TrainingFailed,
    TrainingStarted,
)
from shared.runtime import feast
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.bootstrap import HandlerTable, bind
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.memory import InMemoryBus
from shared.runtime.settings import Settings
from shared.runtime.telemetry import make_tracer_provider

GROUP = "registry"
HISTORY = (
    DriftDetected,
    PerformanceDegraded,
    AlertRaised,
    AlertResolved,
    RetrainRequested,
    RetrainSkipped,
    RolloutCommanded,
)
HANDLERS: HandlerTable = {
    DataArrived: [handlers.on_data_arrived],
    TrainingStarted: [handlers.on_training_started],
    TrainingFailed: [handlers.on_training_failed],
    ModelTrained: [handlers.on_model_trained],
    ModelRegistered: [handlers.on_model_registered],
    ModelEvaluated: [handlers.on_model_evaluated],
    RolloutChanged: [handlers.on_rollout_changed],
    **{kind: [handlers.on_history] for kind in HISTORY},
}


@dataclass
class Registry:
    """One registry process: database, bus, alias cache and API, built once."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    cache: AliasCache
    metrics: CollectorRegistry
    api: FastAPI

    async def start(self) -> None:
        """Listen for changes, then start consuming and relaying."""
        await self.cache.start()
        await self.bus.start()

    async def stop(self) -> None:
        """Stop consuming, stop listening, close the database."""
        await self.bus.stop()
        await self.cache.stop()
        await self.engine.dispose()


def build(settings: Settings, *, group: str = GROUP) -> Registry:
    """The composition root: every long-lived object of a registry process."""
    feast.configure(settings)
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    metrics = CollectorRegistry()
    bus = Bus(settings, sessions=sessions, tracer_provider=make_tracer_provider(settings), registry=metrics)
    bus.register(bind(HANDLERS), group=group, store=store.SqlStore)
    cache = AliasCache(settings.database_url)
    return Registry(
        settings=settings,
        engine=engine,
        sessions=sessions,
        bus=bus,
        cache=cache,
        metrics=metrics,
        api=make_api(
            settings, sessions=sessions, bus=bus, cache=cache, metrics=metrics, artifacts=ArtifactStore(settings)
        ),
    )


def in_memory(memory: MemoryStore | None = None) -> InMemoryBus[MemoryStore]:
    """The registry's handlers on its in-memory store, for tests with no server."""
    return InMemoryBus(bind(HANDLERS), memory or MemoryStore(), consumer=GROUP)
