"""The alerter: lifecycle events become alerts, alerts become grouped notifications, and no
notification is lost.

Consumes the events that raise alerts (`DriftDetected`, `PerformanceDegraded`, `TrainingFailed`,
`ModelEvaluated` rejected, `RolloutChanged` rolled back, `CanaryAnalyzed` roll back,
`DeadLettered`) and those that clear them (a promotion, a successful training, a passed
evaluation); a firing alert not raised again within `resolve_timeout` resolves by itself.
Each alert joins the group of every route it matches; a dispatcher flushes due groups (after
`group_wait`, at most once per `group_interval` when they change, again after
`repeat_interval`) into the notification log, minus silenced and inhibited alerts, and a
delivery loop sends the log's pending notifications, retrying with backoff until they go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, HTTPException, Query
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.alerter import domain, store
from services.alerter.config import AlerterConfig, Matcher, RoutePlan, load_config, plans, routes_for, seconds
from services.alerter.receivers import DeliveryError, Receivers
from shared.contract import topics
from shared.contract.events import (
    CanaryAnalyzed,
    DeadLettered,
    DriftDetected,
    Event,
    ModelEvaluated,
    ModelSpecApplied,
    ModelTrained,
    PerformanceDegraded,
    RolloutChanged,
    TrainingFailed,
)
from shared.runtime.broker import ensure_topics
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.errors import TransientError, is_transient
from shared.runtime.httpapi import (
    BodyLimit,
    HttpMetrics,
    Limit,
    Operator,
    Viewer,
    add_error_handlers,
    add_health_routes,
    identifier,
)
from shared.runtime.settings import Settings
from shared.runtime.telemetry import make_tracer_provider
from shared.runtime.uow import HandlerContext

log = logging.getLogger("modelbus.alerter")
GROUP = "alerter"
SOURCES: list[tuple[str, type[Event]]] = [
    (topics.DRIFT_DETECTED, DriftDetected),
    (topics.PERFORMANCE_DEGRADED, PerformanceDegraded),
    (topics.TRAINING_FAILED, TrainingFailed),
    (topics.MODEL_EVALUATED, ModelEvaluated),
    (topics.ROLLOUT_CHANGED, RolloutChanged),
    (topics.CANARY_ANALYZED, CanaryAnalyzed),
    (topics.MODEL_TRAINED, ModelTrained),
]


@dataclass
class Metrics:
    """The alerter's Prometheus metrics."""

    registry: CollectorRegistry
    raised: Counter = field(init=False)
    resolved: Counter = field(init=False)
    notifications: Counter = field(init=False)
    failures: Counter = field(init=False)
    pending: Gauge = field(init=False)

    def __post_init__(self) -> None:
        self.raised = Counter(
            "modelbus_alerts_raised", "Alerts raised (new or firing again).", ["kind"], registry=self.registry
        )
        self.resolved = Counter("modelbus_alerts_resolved", "Alerts resolved.", registry=self.registry)
        self.notifications = Counter(
            "modelbus_alert_notifications", "Notifications sent.", ["receiver"], registry=self.registry
        )
        self.failures = Counter(
            "modelbus_alert_delivery_failures", "Failed delivery attempts.", ["receiver"], registry=self.registry
        )
        self.pending = Gauge(
            "modelbus_alert_notifications_pending", "Notifications waiting to be sent.", registry=self.registry
        )


@dataclass
class Alerter:
    """Alerts, groups and the notification log."""

    settings: Settings
    config: AlerterConfig
    sessions: async_sessionmaker[AsyncSession]
    receivers: Receivers
    metrics: Metrics
    links: domain.Links
    plans: dict[str, RoutePlan] = field(init=False)

    def __post_init__(self) -> None:
        self.plans = plans(self.config)

    @property
    def platform(self) -> str:
        """The topic prefix: what this alerter's alerts, groups and notifications belong to."""
        return self.settings.topic_prefix

    # ------------------------------------------------------------ events in

    async def on_event(self, session: AsyncSession, event: Event, event_id: str, traceparent: str | None) -> None:
        """Raise the alert an event means, and clear the ones it resolves."""
        now = datetime.now(UTC)
        model = getattr(event, "model", domain.PLATFORM)
        known = await store.specs.of(session, model) if model != domain.PLATFORM else None
        alert = domain.raised_by(event, event_id, traceparent, known.alerts if known else None, self.links)
        if alert is not None:
            await self.fire(session, alert, now)
        resolution = domain.resolved_by(event)
        if resolution is not None:
            cleared = [
                row.fingerprint
                for row in await store.firing_of(session, self.platform, model)
                if resolution.clears(row.labels)
            ]
            await self.clear(session, cleared, now, resolution.reason)

    async def fire(self, session: AsyncSession, alert: domain.Alert, now: datetime) -> None:
        """Record the alert; if it is news, put it in its groups (a repeat changes no timing)."""
        if not await store.raise_alert(session, self.platform, alert, now):
            return
        self.metrics.raised.labels(alert.labels.get("kind", "")).inc()
        log.info("alert %s firing: %s", alert.fingerprint, alert.annotations.get("summary", ""))
        for path in routes_for(self.config, alert.labels):
            plan = self.plans[path]
            labels = domain.group_labels(alert.labels, plan.group_by)
            await store.touch_group(
                session,
                self.platform,
                domain.group_key(self.platform, path, labels),
                path,
                plan.receiver,
                labels,
                alert.fingerprint,
                now,
                plan.group_wait,
                plan.group_interval,
            )

    async def clear(self, session: AsyncSession, fingerprints: list[str], now: datetime, reason: str) -> None:
        """Resolve firing alerts; their groups tell of it within their group_interval."""
        resolved = await store.resolve(session, self.platform, fingerprints, now, reason)
        if resolved:
            self.metrics.resolved.inc(len(resolved))
            log.info("%d alert(s) resolved: %s", len(resolved), reason)
            timings = {path: (plan.group_wait, plan.group_interval) for path, plan in self.plans.items()}
            await store.touch_groups_of(session, self.platform, resolved, now, timings)

    # ------------------------------------------------------------ groups out

    async def expire(self, now: datetime) -> None:
        """Resolve alerts not raised again within resolve_timeout."""
        timeout = self.config.resolve_timeout
        async with self.sessions() as session, session.begin():
            old = await store.stale(session, self.platform, now - timedelta(seconds=timeout))
            await self.clear(session, old, now, f"not raised again for {timeout:.0f} s")

    async def dispatch(self, now: datetime) -> int:
        """Flush the groups that are due into the notification log; returns notifications written."""
        written = 0
        async with self.sessions() as session, session.begin():
            due = await store.due_groups(session, self.platform, now)
            if not due:
                return 0
            silences = await store.active_silences(session, self.platform, now)
            firing = await store.all_firing(session, self.platform)
            for group in due:
                written += await self._flush(session, group, silences, firing, now)
        return written

    async def _flush(
        self,
        session: AsyncSession,
        group: store.GroupRow,
        silences: list[domain.Silence],
        firing: dict[str, dict[str, str]],
        now: datetime,
    ) -> int:
        members = [row.member() for row in await store.members_of(session, group)]
        targets = {m.fingerprint: m.labels for m in members if m.status == "firing"}
        muted = {fp for fp, labels in targets.items() if any(s.mutes(labels, now) for s in silences)}
        muted |= set(domain.inhibited(targets, firing, self.config.inhibit_rules))
        flushed = domain.flush(members, group.notified or {}, muted)
        plan = self.plans.get(group.route)
        repeat = plan.repeat_interval if plan else 14400.0
        interval = plan.group_interval if plan else 300.0
        written = 0
        if flushed.send:
            notification_id = uuid.uuid4().hex
            order = plan.group_by if plan else ()
            named = {k: group.group_labels[k] for k in order if k in group.group_labels}
            named.update({k: v for k, v in sorted(group.group_labels.items()) if k not in named})
            session.add(
                store.NotificationRow(
                    id=notification_id,
                    platform=self.platform,
                    group_key=group.key,
                    receiver=group.receiver,
                    payload=domain.payload(notification_id, group.receiver, named, flushed.send, now),
                    status="pending",
                    attempts=0,
                    created_at=now,
                    next_attempt_at=now,
                )
            )
            group.last_notified_at = now
            written = 1
        group.notified = dict(flushed.notified)
        await store.leave_group(session, group.key, [m.fingerprint for m in members if m.status == "resolved"])
        group.next_flush_at = domain.due_after_flush(now, flushed, bool(targets.keys() & muted), repeat, interval)
        return written

    async def deliver(self, now: datetime) -> int:
        """Send pending notifications; a failure stays pending and is retried with backoff."""
        async with self.sessions() as session, session.begin():
            rows = await store.pending(session, self.platform, now)
            outcomes = await asyncio.gather(
                *(self.receivers.deliver(row.receiver, row.id, row.payload) for row in rows), return_exceptions=True
            )
            sent = 0
            for row, outcome in zip(rows, outcomes, strict=True):
                row.attempts += 1
                if isinstance(outcome, BaseException):
                    delay = min(self.settings.alerter_retry_max_seconds, 2.0 ** (row.attempts - 1))
                    row.next_attempt_at = now + timedelta(seconds=delay)
                    row.last_error = str(outcome)[:2000]
                    self.metrics.failures.labels(row.receiver).inc()
                    log.warning(
                        "notification %s (attempt %d) not delivered, next in %.0f s: %s",
                        row.id,
                        row.attempts,
                        delay,
                        outcome,
                    )
                    continue
                row.status, row.sent_at, row.last_error = "sent", datetime.now(UTC), None
                self.metrics.notifications.labels(row.receiver).inc()
                sent += 1
            # The count flushes the rows just marked sent first: it is what still waits.
            waiting = await session.scalar(
                select(func.count())
                .select_from(store.NotificationRow)
                .where(store.NotificationRow.platform == self.platform, store.NotificationRow.status == "pending")
            )
            self.metrics.pending.set(int(waiting or 0))
        return sent

    async def tick(self) -> None:
        """One round: expire, flush due groups, deliver."""
        now = datetime.now(UTC)
        await self.expire(now)
        await self.dispatch(now)
        await self.deliver(now)


def register_consumers(bus: Bus, alerter: Alerter, *, group: str = GROUP) -> None:
    """Subscribe the alerter to specs and to the events that raise or clear alerts."""

    @bus.consumer(topics.MODEL_SPEC_APPLIED, group=group, events=[ModelSpecApplied])
    async def on_spec(event: ModelSpecApplied, ctx: HandlerContext) -> None:
        await store.specs.keep(ctx.session, event)

    for topic, cls in SOURCES:

        @bus.consumer(topic, group=group, events=[cls])
        async def on_source(event: Event, ctx: HandlerContext) -> None:
            await alerter.on_event(ctx.session, event, ctx.envelope.id, ctx.envelope.traceparent)

    dead_letters = bus.settings.topic(topics.DEAD_LETTER)

    @bus.consumer(topics.DEAD_LETTER, group=group, events=[DeadLettered])
    async def on_dead_letter(event: DeadLettered, ctx: HandlerContext) -> None:
        try:
            await alerter.on_event(ctx.session, event, ctx.envelope.id, ctx.envelope.traceparent)
        except Exception as exc:
            # A dead letter about a dead letter the alerter could not handle would come back to it
            # for ever: that one is only logged.
            if event.original_topic != dead_letters or is_transient(exc):
                raise
            log.exception("could not raise an alert for the dead letter %s", ctx.envelope.id)


# ---------------------------------------------------------------- HTTP


class Ack(BaseModel):
    """An acknowledgement."""

    comment: str = Field(default="", max_length=2000, description="What is being done about it.")


class NewSilence(BaseModel):
    """A silence to create: matchers, and either an end or a duration."""

    matchers: list[str] = Field(
        min_length=1, max_length=50, description='e.g. ["model=\\"churn\\"", "kind=~\\"drift\\""]'
    )
    starts_at: datetime | None = Field(default=None, description="Start (UTC); now if absent.")
    ends_at: datetime | None = Field(default=None, description="End (UTC).")
    duration: str | float | None = Field(default=None, description="Length instead of an end: 2h, 30m, seconds.")
    comment: str = Field(min_length=1, max_length=2000, description="Why.")

    @field_validator("matchers")
    @classmethod
    def _parse(cls, value: list[str]) -> list[str]:
        return [str(Matcher.parse(m)) for m in value]


def make_api(
    settings: Settings,
    alerter: Alerter,
    sessions: async_sessionmaker[AsyncSession],
    bus: Bus,
    metrics: CollectorRegistry,
) -> FastAPI:
    """The alerter's FastAPI application: alerts, acknowledgements, silences, notifications."""
    api = FastAPI(title="modelbus alerter", version="1", description="Alerts, silences and the notification log.")
    api.state.identify = identifier(settings)
    api.add_middleware(BodyLimit, limit=settings.api_max_body_bytes)
    add_error_handlers(api)
    api.add_middleware(HttpMetrics, registry=metrics)
    platform = settings.topic_prefix

    add_health_routes(api, sessions, bus, metrics)

    @api.get("/v1/alerts", tags=["read"])
    async def list_alerts(
        _: Viewer,
        status: Annotated[Literal["firing", "resolved"] | None, Query()] = None,
        model: str | None = None,
        kind: str | None = None,
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        """Alerts, most recently raised first."""
        async with sessions() as session:
            rows = await store.alerts(session, platform, status=status, model=model, kind=kind, limit=limit)
            now = datetime.now(UTC)
            silences = await store.active_silences(session, platform, now)
            firing = await store.all_firing(session, platform)
        targets = {r.fingerprint: r.labels for r in rows if r.status == "firing"}
        inhibited = domain.inhibited(targets, firing, alerter.config.inhibit_rules)
        found = []
        for row in rows:
            item = row.as_dict()
            item["silenced_by"] = [s.id for s in silences if row.status == "firing" and s.mutes(row.labels, now)]
            item["inhibited_by"] = inhibited.get(row.fingerprint)
            found.append(item)
        return found

    @api.get("/v1/alerts/{fingerprint}", tags=["read"])
    async def show_alert(_: Viewer, fingerprint: str) -> dict[str, Any]:
        """One alert, with the notifications that carried it."""
        async with sessions() as session:
            row = await session.get(store.AlertRow, (platform, fingerprint))
            if row is None:
                raise HTTPException(404, f"no alert has the fingerprint {fingerprint!r}")
            sent = await store.notifications_of(session, platform, fingerprint)
        return {**row.as_dict(), "notifications": [n.as_dict() for n in sent]}

    @api.post("/v1/alerts/{fingerprint}/ack", tags=["act"])
    async def ack(who: Operator, fingerprint: str, body: Annotated[Ack | None, Body()] = None) -> dict[str, Any]:
        """Acknowledge an alert: someone is on it (it keeps notifying; silence it to mute it)."""
        now = datetime.now(UTC)
        async with sessions() as session, session.begin():
            row = await session.get(store.AlertRow, (platform, fingerprint), with_for_update=True)
            if row is None:
                raise HTTPException(404, f"no alert has the fingerprint {fingerprint!r}")
            comment = body.comment if body else ""
            row.acked_by, row.acked_at, row.ack_comment = who.actor, now, comment
            store.audit(session, who.actor, "ack", fingerprint, now, comment=comment)
            return row.as_dict()

    @api.get("/v1/silences", tags=["read"])
    async def list_silences(_: Viewer, expired: bool = False) -> list[dict[str, Any]]:
        """Silences in force or to come (and ended ones with expired=true), newest first."""
        now = datetime.now(UTC)
        async with sessions() as session:
            found = await store.silences(session, platform, include_expired=expired, now=now)
            return [s.as_dict(now) for s in found]

    @api.post("/v1/silences", tags=["act"], status_code=201)
    async def create_silence(who: Operator, body: NewSilence) -> dict[str, Any]:
        """Mute the alerts matching every matcher, from start to end."""
        now = datetime.now(UTC)
        starts = body.starts_at or now
        if body.ends_at is not None:
            ends = body.ends_at
        elif body.duration is not None:
            try:
                ends = starts + timedelta(seconds=seconds(body.duration))
            except ValueError as exc:
                raise HTTPException(422, f"duration: {exc}") from None
        else:
            raise HTTPException(422, "give ends_at or duration")
        if ends <= starts:
            raise HTTPException(422, "the silence ends before it starts")
        row = store.SilenceRow(
            id=uuid.uuid4().hex[:12],
            platform=platform,
            matchers=body.matchers,
            starts_at=starts,
            ends_at=ends,
            created_by=who.actor,
            comment=body.comment,
            created_at=now,
        )
        async with sessions() as session, session.begin():
            session.add(row)
            store.audit(
                session,
                who.actor,
                "silence",
                row.id,
                now,
                matchers=body.matchers,
                ends_at=ends.isoformat(),
                comment=body.comment,
            )
        return row.as_dict(now)

    @api.delete("/v1/silences/{silence_id}", tags=["act"])
    async def expire_silence(who: Operator, silence_id: str) -> dict[str, Any]:
        """End a silence now."""
        now = datetime.now(UTC)
        async with sessions() as session, session.begin():
            row = await session.get(store.SilenceRow, silence_id, with_for_update=True)
            if row is None or row.platform != platform:
                raise HTTPException(404, f"no silence has the id {silence_id!r}")
            if row.ends_at > now:
                row.ends_at, row.expired_by = max(now, row.starts_at), who.actor
                store.audit(session, who.actor, "expire-silence", silence_id, now)
            return row.as_dict(now)

    @api.get("/v1/notifications", tags=["read"])
    async def list_notifications(
        _: Viewer, status: Annotated[Literal["pending", "sent"] | None, Query()] = None, limit: Limit = 100
    ) -> list[dict[str, Any]]:
        """The notification log, newest first."""
        query = (
            select(store.NotificationRow)
            .where(store.NotificationRow.platform == platform)
            .order_by(store.NotificationRow.created_at.desc())
            .limit(limit)
        )
        if status:
            query = query.where(store.NotificationRow.status == status)
        async with sessions() as session:
            return [n.as_dict() for n in (await session.scalars(query)).all()]

    return api


# ---------------------------------------------------------------- the process


@dataclass
class AlerterService:
    """One alerter process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    alerter: Alerter
    api: FastAPI
    loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the receivers' extra topics, start consuming and the dispatch loop."""
        extra = sorted(
            {r.kafka.topic for r in self.alerter.config.receivers if r.kafka} - {t.name for t in topics.CATALOG}
        )
        if extra:
            created, _ = await ensure_topics(self.settings, catalog=[topics.TopicSpec(name, 3) for name in extra])
            if created:
                log.info("created receiver topics %s", ", ".join(created))
        await self.bus.start()
        self.loop_task = asyncio.create_task(self._forever(), name="alerter-dispatch")

    async def stop(self) -> None:
        """Stop the loop and the bus; close the database and HTTP clients."""
        if self.loop_task is not None:
            self.loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.loop_task
        await self.bus.stop()
        await self.alerter.receivers.close()
        await self.engine.dispose()

    async def _forever(self) -> None:
        while True:
            try:
                await self.alerter.tick()
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
    links = domain.Links(api_url=settings.api_url.rstrip("/"), trace_url=settings.trace_query_url.rstrip("/") or None)
    alerter = Alerter(settings, config, sessions, Receivers(config, bus), Metrics(registry), links)
    register_consumers(bus, alerter, group=group)
    api = make_api(settings, alerter, sessions, bus, registry)
    return AlerterService(settings=settings, engine=engine, sessions=sessions, bus=bus, alerter=alerter, api=api)
