"""The monitor: windows of live predictions per model version, drift against the training reference,
canary analysis, live performance once labels arrive, and the retrain policy.

Consumes specs (the monitoring policy), `ModelTrained` (the reference profile, never recomputed
from raw data), `TrainingStarted` and `DataArrived` (what each run trains on, what data exists:
whether a retrain can help), `ModelRegistered` (which run a version is), `RolloutChanged` (what is live),
`LabelsArrived` and `PredictionsLogged` (in batches: every one of a poll in one call). `HANDLERS`
is what it reacts to (services.monitor.handlers); `build` puts it together for a process, with the
sweep that closes windows by age, `in_memory` for the handler tests, both through the same `bind`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.monitor import feedback, handlers, store
from services.monitor.api import make_api
from services.monitor.memory import MemoryStore
from services.monitor.metrics import Metrics
from services.monitor.steps import Watch
from shared.contract.events import (
    DataArrived,
    LabelsArrived,
    ModelRegistered,
    ModelSpecApplied,
    ModelTrained,
    PredictionsLogged,
    RolloutChanged,
    TrainingStarted,
)
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.bootstrap import HandlerTable, bind
from shared.runtime.bus import Bus
from shared.runtime.commands import SqlCommands
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.memory import InMemoryBus
from shared.runtime.settings import Settings
from shared.runtime.tasks import cancel_and_wait
from shared.runtime.telemetry import make_tracer_provider

log = logging.getLogger("modelbus.monitor")
GROUP = "monitor"
SWEEP_SECONDS = 5.0
HANDLERS: HandlerTable = {
    ModelSpecApplied: [handlers.on_spec],
    ModelTrained: [handlers.on_trained],
    TrainingStarted: [handlers.on_training_started],
    DataArrived: [handlers.on_data],
    ModelRegistered: [handlers.on_registered],
    RolloutChanged: [handlers.on_rollout],
    LabelsArrived: [handlers.on_labels],
    PredictionsLogged: [handlers.on_predictions],
}


@dataclass
class MonitorService:
    """One monitor process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    watch: Watch
    metrics: CollectorRegistry
    api: FastAPI
    sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start consuming, and the sweep that closes windows by age."""
        await self.bus.start()
        self.sweeper = asyncio.create_task(self._sweep_forever(), name="monitor-sweep")

    async def stop(self) -> None:
        """Stop the sweep and the bus; close the database."""
        await cancel_and_wait(self.sweeper)
        await self.bus.stop()
        await self.engine.dispose()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.sweep()
            except Exception:
                log.exception("window sweep failed; trying again")

    async def sweep(self) -> int:
        """Close the windows that have aged past their policy's `window_seconds`; returns how many.

        Each window closes in a transaction of its own, with what it emits staged in the outbox.
        """
        commands: SqlCommands[store.MonitorStore] = SqlCommands(self.sessions, store.SqlStore, self.bus)
        async with self.sessions() as session:
            aged = await store.SqlStore(session).aged_windows(datetime.now(UTC))
        closed = 0
        for model, version, age in aged:
            closing = functools.partial(handlers.close_aged, watch=self.watch)
            closed += await commands.run(closing, handlers.CloseAged(model, version, age))
        expiring = functools.partial(handlers.expire_old, watch=self.watch)
        self.watch.metrics.ledger(await commands.run(expiring, handlers.Expire(datetime.now(UTC))))
        return closed


def build(settings: Settings, *, group: str = GROUP) -> MonitorService:
    """The composition root of a monitor process."""
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    registry = CollectorRegistry()
    bus = Bus(settings, sessions=sessions, tracer_provider=make_tracer_provider(settings), registry=registry)
    watch = Watch(
        Metrics(registry),
        timedelta(seconds=settings.monitor_label_horizon_seconds),
        sink=feedback.ArtifactSink(ArtifactStore(settings)),
    )
    if settings.monitor_label_wait_seconds is not None:
        watch.label_wait = timedelta(seconds=settings.monitor_label_wait_seconds)
    bus.register(
        bind(HANDLERS, watch=watch),
        group=group,
        store=store.SqlStore,
        batched=frozenset({PredictionsLogged, LabelsArrived}),
    )
    api = make_api(settings, sessions, bus, registry)
    return MonitorService(
        settings=settings, engine=engine, sessions=sessions, bus=bus, watch=watch, metrics=registry, api=api
    )


def in_memory(
    *,
    memory: MemoryStore | None = None,
    label_horizon: timedelta = timedelta(days=7),
    sink: feedback.Sink | None = None,
) -> InMemoryBus[MemoryStore]:
    """The monitor's handlers on its in-memory store, for tests with no server; feedback datasets
    go to `sink` (a feedback.MemorySink) if given."""
    watch = Watch(Metrics(CollectorRegistry()), label_horizon, sink=sink)
    return InMemoryBus(
        bind(HANDLERS, watch=watch),
        memory or MemoryStore(),
        consumer=GROUP,
        batched=frozenset({PredictionsLogged, LabelsArrived}),
    )
