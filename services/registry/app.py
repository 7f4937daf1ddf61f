"""Wiring of the registry: its consumers on the bus, its HTTP API, and the one composition root."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.registry import domain, store
from services.registry.api import AliasCache, make_api
from shared.contract import topics
from shared.contract.events import (
    AlertRaised,
    AlertResolved,
    DataArrived,
    DriftDetected,
    Event,
    ModelEvaluated,
    ModelRegistered,
    ModelTrained,
    PerformanceDegraded,
    RetrainRequested,
    RolloutChanged,
    RolloutCommanded,
    TrainingFailed,
    TrainingStarted,
)
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.settings import Settings
from shared.runtime.telemetry import make_tracer_provider
from shared.runtime.uow import HandlerContext

log = logging.getLogger(__name__)
GROUP = "registry"


def register_consumers(bus: Bus, *, group: str = GROUP) -> None:
    """Subscribe the registry to every lifecycle topic it keeps."""

    @bus.consumer(topics.DATA_ARRIVED, group=group, events=[DataArrived])
    async def on_data_arrived(event: DataArrived, ctx: HandlerContext) -> None:
        await store.record_dataset(ctx.session, event, event_id=ctx.envelope.id)

    @bus.consumer(topics.TRAINING_STARTED, group=group, events=[TrainingStarted])
    async def on_training_started(event: TrainingStarted, ctx: HandlerContext) -> None:
        await store.record_training_started(ctx.session, event)

    @bus.consumer(topics.TRAINING_FAILED, group=group, events=[TrainingFailed])
    async def on_training_failed(event: TrainingFailed, ctx: HandlerContext) -> None:
        await store.record_training_failed(ctx.session, event, event_id=ctx.envelope.id)

    @bus.consumer(topics.MODEL_TRAINED, group=group, events=[ModelTrained])
    async def on_model_trained(event: ModelTrained, ctx: HandlerContext) -> ModelRegistered | None:
        version, created = await store.register_version(ctx.session, event, event_id=ctx.envelope.id)
        if not created:
            return None
        champion = (await store.aliases_of(ctx.session, event.model)).get("champion")
        return domain.registered(version, champion=champion)

    @bus.consumer(topics.MODEL_REGISTERED, group=group, events=[ModelRegistered])
    async def on_model_registered(event: ModelRegistered, ctx: HandlerContext) -> None:
        await store.mark_evaluating(ctx.session, event)

    @bus.consumer(topics.MODEL_EVALUATED, group=group, events=[ModelEvaluated])
    async def on_model_evaluated(event: ModelEvaluated, ctx: HandlerContext) -> None:
        await store.record_evaluation(ctx.session, event, event_id=ctx.envelope.id)

    @bus.consumer(topics.ROLLOUT_CHANGED, group=group, events=[RolloutChanged])
    async def on_rollout_changed(event: RolloutChanged, ctx: HandlerContext) -> None:
        await store.record_rollout(ctx.session, event, event_id=ctx.envelope.id)

    kept: tuple[tuple[str, list[type[Event]]], ...] = (
        (topics.DRIFT_DETECTED, [DriftDetected]),
        (topics.PERFORMANCE_DEGRADED, [PerformanceDegraded]),
        (topics.ALERTS, [AlertRaised, AlertResolved]),
        (topics.RETRAIN_REQUESTED, [RetrainRequested]),
        (topics.ROLLOUT_COMMANDED, [RolloutCommanded]),
    )
    for topic, kinds in kept:
        bus.consumer(topic, group=group, events=kinds)(on_history)


async def on_history(event: Event, ctx: HandlerContext) -> None:
    """Keep a drift, performance, alert or command event in the model's history."""
    entry = domain.history_entry(event)
    if entry is None:
        return
    version, summary = entry
    await store.add_history(
        ctx.session,
        event_id=ctx.envelope.id,
        model=str(getattr(event, "model")),  # noqa: B009 - every kept event names its model
        version=version,
        kind=event.event_type,
        summary=summary,
        payload=event.model_dump(mode="json"),
        occurred_at=event.occurred_at,
    )


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
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    metrics = CollectorRegistry()
    bus = Bus(settings, sessions=sessions, tracer_provider=make_tracer_provider(settings), registry=metrics)
    register_consumers(bus, group=group)
    cache = AliasCache(settings.database_url)
    return Registry(
        settings=settings,
        engine=engine,
        sessions=sessions,
        bus=bus,
        cache=cache,
        metrics=metrics,
        api=make_api(settings, sessions=sessions, bus=bus, cache=cache, metrics=metrics),
    )
