"""The alerter: lifecycle events become alerts, alerts become grouped notifications, and no
notification is lost.

Consumes the events that raise alerts (`DriftDetected`, `PerformanceDegraded`, `TrainingFailed`,
`ModelEvaluated` rejected, `RolloutChanged` rolled back, `CanaryAnalyzed` roll back,
`DeadLettered`) and those that clear them (a promotion, a successful training, a passed
evaluation); a firing alert not raised again within `resolve_timeout` resolves by itself.
`HANDLERS` is what it reacts to (services.alerter.handlers); the dispatch loop
(services.alerter.dispatch) flushes due groups into the notification log and delivers it; the
HTTP API is services.alerter.api. `build` puts them together for a process, `in_memory` the
handlers for tests, both through the same `bind`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.alerter import dispatch, domain, handlers
from services.alerter.api import make_api
from services.alerter.config import AlerterConfig, load_config
from services.alerter.handlers import Alerting, Metrics
from services.alerter.memory import MemoryStore
from services.alerter.receivers import DeliveryError, Receivers
from services.alerter.store import SqlStore
from shared.contract import topics
from shared.contract.events import (
    CanaryAnalyzed,
    DeadLettered,
    DriftDetected,
    ModelEvaluated,
    ModelSpecApplied,
    ModelTrained,
    PerformanceDegraded,
    RetrainSkipped,
    RolloutChanged,
    TrainingFailed,
)
from shared.runtime.bootstrap import HandlerTable, bind
from shared.runtime.broker import ensure_topics
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.errors import TransientError, is_transient
from shared.runtime.memory import InMemoryBus
from shared.runtime.settings import Settings
from shared.runtime.tasks import cancel_and_wait
from shared.runtime.telemetry import make_tracer_provider

log = logging.getLogger("modelbus.alerter")
GROUP = "alerter"
SOURCES = (
    DriftDetected,
    PerformanceDegraded,
    TrainingFailed,
    ModelEvaluated,
    RolloutChanged,
    CanaryAnalyzed,
    ModelTrained,
    RetrainSkipped,
)
HANDLERS: HandlerTable = {
    ModelSpecApplied: [handlers.on_spec],
    **{source: [handlers.on_source] for source in SOURCES},
    DeadLettered: [handlers.on_dead_letter],
}


@dataclass
class AlerterService:
    """One alerter process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    alerting: Alerting
    receivers: Receivers
    api: FastAPI
    loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the receivers' extra topics, start consuming and the dispatch loop."""
        extra = sorted(
            {r.kafka.topic for r in self.alerting.config.receivers if r.kafka} - {t.name for t in topics.CATALOG}
        )
        if extra:
            created, _ = await ensure_topics(
                self.settings, catalog=[topics.TopicSpec(name, 3) for name in extra], acls=False
            )
            if created:
                log.info("created receiver topics %s", ", ".join(created))
        await self.bus.start()
        self.loop_task = asyncio.create_task(self._forever(), name="alerter-dispatch")

    async def stop(self) -> None:
        """Stop the loop and the bus; close the database and HTTP clients."""
        await cancel_and_wait(self.loop_task)
        await self.bus.stop()
        await self.receivers.close()
        await self.engine.dispose()

    async def tick(self) -> None:
        """One round, each step in a transaction of its own: expire, flush due groups, deliver."""
        now = datetime.now(UTC)
        platform = self.settings.topic_prefix
        async with self.sessions() as session, session.begin():
            await dispatch.expire(SqlStore(session, platform), self.alerting, now)
        async with self.sessions() as session, session.begin():
            await dispatch.dispatch(SqlStore(session, platform), self.alerting, now)
        async with self.sessions() as session, session.begin():
            await dispatch.deliver(
                SqlStore(session, platform),
                self.alerting,
                self.receivers,
                now,
                retry_max_seconds=self.settings.alerter_retry_max_seconds,
            )

    async def _forever(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:
                level = (
                    logging.WARNING
                    if is_transient(exc) or isinstance(exc, DeliveryError | TransientError)
                    else logging.ERROR
                )
                log.log(level, "alerter round failed (%s); trying again", exc, exc_info=level == logging.ERROR)
            await asyncio.sleep(self.settings.alerter_tick_seconds)


def build(settings: Settings, *, group: str = GROUP, config: AlerterConfig | None = None) -> AlerterService:
    """The composition root of an alerter process (the configuration from MODELBUS_ALERTER_CONFIG)."""
    config = config if config is not None else load_config(settings.alerter_config)
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    registry = CollectorRegistry()
    bus = Bus(settings, sessions=sessions, tracer_provider=make_tracer_provider(settings), registry=registry)
    alerting = Alerting(config, Metrics(registry), links(settings))
    table = bind(HANDLERS, alerting=alerting, dead_letters=settings.topic(topics.DEAD_LETTER))
    bus.register(table, group=group, store=functools.partial(SqlStore, platform=settings.topic_prefix))
    return AlerterService(
        settings=settings,
        engine=engine,
        sessions=sessions,
        bus=bus,
        alerting=alerting,
        receivers=Receivers(config, bus),
        api=make_api(settings, config, sessions, bus, registry, alerting),
    )


def links(settings: Settings) -> domain.Links:
    """Where alerts link to: the registry's API and the trace viewer."""
    return domain.Links(api_url=settings.api_url.rstrip("/"), console_url=settings.console_url.rstrip("/") or None)


def in_memory(
    config: AlerterConfig, *, settings: Settings | None = None, memory: MemoryStore | None = None
) -> InMemoryBus[MemoryStore]:
    """The alerter's handlers on its in-memory store, for tests with no server."""
    settings = settings or Settings()
    alerting = Alerting(config, Metrics(CollectorRegistry()), links(settings))
    table = bind(HANDLERS, alerting=alerting, dead_letters=settings.topic(topics.DEAD_LETTER))
    return InMemoryBus(table, memory or MemoryStore(settings.topic_prefix), consumer=GROUP)
