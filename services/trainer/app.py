"""The trainer: consumers that queue training runs, and the worker that runs them.

`HANDLERS` is what it reacts to (services.trainer.handlers); the worker (services.trainer.worker)
claims the queued jobs. `build` puts them together for a process, `in_memory` the handlers for
tests, both through the same `bind`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.trainer import handlers, store
from services.trainer.memory import MemoryStore
from services.trainer.mirror import Mirror, MlflowMirror, NoMirror
from services.trainer.worker import Worker
from shared.contract.events import DataArrived, ModelRegistered, ModelSpecApplied, RetrainRequested
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.bootstrap import HandlerTable, bind
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.memory import InMemoryBus
from shared.runtime.settings import Settings
from shared.runtime.tasks import cancel_and_wait
from shared.runtime.telemetry import make_tracer_provider

GROUP = "trainer"
HANDLERS: HandlerTable = {
    ModelSpecApplied: [handlers.on_spec],
    DataArrived: [handlers.on_data],
    RetrainRequested: [handlers.on_retrain],
    ModelRegistered: [handlers.on_registered],
}


@dataclass
class Trainer:
    """One trainer process: database, bus, artifact store, worker."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    worker: Worker
    metrics: CollectorRegistry
    mirror: Mirror
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start consuming and training."""
        await self.bus.start()
        self.task = asyncio.create_task(self.worker.run_forever(), name="training-worker")

    async def stop(self) -> None:
        """Stop training and consuming."""
        await cancel_and_wait(self.task)
        self.worker.shutdown()
        await self.bus.stop()
        if isinstance(self.mirror, MlflowMirror):
            await self.mirror.close()
        await self.engine.dispose()


def build(settings: Settings, *, group: str = GROUP) -> Trainer:
    """The composition root of a trainer process."""
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    metrics = CollectorRegistry()
    provider = make_tracer_provider(settings)
    bus = Bus(settings, sessions=sessions, tracer_provider=provider, registry=metrics)
    mirror: Mirror = NoMirror()
    if settings.mlflow_tracking_uri:
        mirror = MlflowMirror(
            settings.mlflow_tracking_uri, retry_seconds=settings.mlflow_retry_seconds, registry=metrics
        )
    bus.register(bind(HANDLERS, platform=settings.topic_prefix, mirror=mirror), group=group, store=store.SqlStore)
    worker = Worker(
        settings=settings,
        sessions=sessions,
        bus=bus,
        artifacts=ArtifactStore(settings),
        tracer=provider.get_tracer("modelbus.trainer"),
        mirror=mirror,
    )
    return Trainer(
        settings=settings, engine=engine, sessions=sessions, bus=bus, worker=worker, metrics=metrics, mirror=mirror
    )


def in_memory(
    *, platform: str = "modelbus", memory: MemoryStore | None = None, mirror: Mirror | None = None
) -> InMemoryBus[MemoryStore]:
    """The trainer's handlers on its in-memory store, for tests with no server."""
    table = bind(HANDLERS, platform=platform, mirror=mirror or NoMirror())
    return InMemoryBus(table, memory or MemoryStore(), consumer=GROUP)
