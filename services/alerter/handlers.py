"""The alerter's handlers: an event raises the alert it means and clears the ones it resolves; a
new (or changed) alert makes its groups due. services.alerter.dispatch flushes and delivers them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.alerter import domain
from services.alerter.config import AlerterConfig, RoutePlan, plans, routes_for
from services.alerter.records import Group
from services.alerter.store import AlerterStore
from shared.contract.events import DeadLettered, Event, ModelSpecApplied
from shared.runtime.errors import is_transient
from shared.runtime.uow import UnitOfWork

log = logging.getLogger("modelbus.alerter")
UoW = UnitOfWork[AlerterStore]


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
class Alerting:
    """What the alerter's handlers and dispatch share: its routing, metrics and links."""

    config: AlerterConfig
    metrics: Metrics
    links: domain.Links
    plans: dict[str, RoutePlan] = field(init=False)

    def __post_init__(self) -> None:
        self.plans = plans(self.config)
        for receiver in self.config.receivers:  # each receiver's counters start at 0
            self.metrics.notifications.labels(receiver.name)
            self.metrics.failures.labels(receiver.name)


async def on_spec(event: ModelSpecApplied, uow: UoW) -> None:
    """Keep the model's alert labels."""
    if not await uow.store.keep_spec(event):
        uow.drop(f"spec revision {event.revision} of {event.model} is not newer than the one in force")


async def on_source(event: Event, uow: UoW, *, alerting: Alerting) -> None:
    """Raise the alert the event means, and clear the ones it resolves."""
    resolved = await on_event(uow.store, alerting, event, uow.envelope.id, uow.envelope.traceparent)
    if resolved is not None:
        uow.drop(resolved)


async def on_dead_letter(event: DeadLettered, uow: UoW, *, alerting: Alerting, dead_letters: str) -> None:
    """A dead letter is an alert of the platform's."""
    try:
        await on_event(uow.store, alerting, event, uow.envelope.id, uow.envelope.traceparent)
    except Exception as exc:
        # A dead letter about a dead letter the alerter could not handle would come back to it
        # for ever: that one is only logged.
        if event.original_topic != dead_letters or is_transient(exc):
            raise
        log.exception("could not raise an alert for the dead letter %s", uow.envelope.id)


async def on_event(
    store: AlerterStore, alerting: Alerting, event: Event, event_id: str, traceparent: str | None
) -> str | None:
    """Raise the alert an event means, and clear the ones it resolves. An event whose alert was
    resolved before it arrived (by an event that happened after it, on another topic) raises
    nothing: returns why."""
    now = datetime.now(UTC)
    model = getattr(event, "model", domain.PLATFORM)
    known = await store.spec_of(model) if model != domain.PLATFORM else None
    alert = domain.raised_by(
        event,
        event_id,
        traceparent,
        known.alerts if known else None,
        alerting.links,
        known.workspace if known else "default",
    )
    late = None
    if alert is not None:
        kept = await store.resolution_of(model, alert.labels.get("kind", ""))
        if kept is not None and kept.covers(alert.labels, event.occurred_at):
            late = f"{alert.annotations.get('summary', alert.fingerprint)}: resolved before it arrived ({kept.reason})"
        else:
            await fire(store, alerting, alert, now)
    resolution = domain.resolved_by(event)
    if resolution is not None:
        cleared = [row.fingerprint for row in await store.firing_of(model) if resolution.clears(row.labels)]
        await clear(store, alerting, cleared, now, resolution.reason)
        await store.keep_resolution(resolution)
    return late


async def fire(store: AlerterStore, alerting: Alerting, alert: domain.Alert, now: datetime) -> None:
    """Record the alert; if it is news, put it in its groups (a repeat changes no timing)."""
    if not domain.is_news(await store.raise_alert(alert, now)):
        return
    alerting.metrics.raised.labels(alert.labels.get("kind", "")).inc()
    log.info("alert %s firing: %s", alert.fingerprint, alert.annotations.get("summary", ""))
    for path in routes_for(alerting.config, alert.labels):
        plan = alerting.plans[path]
        labels = domain.group_labels(alert.labels, plan.group_by)
        key = domain.group_key(store.platform, path, labels)
        group = await store.join_group(key, path, plan.receiver, labels, alert.fingerprint, now)
        await make_due(store, group, now, plan.group_wait, plan.group_interval)


async def clear(store: AlerterStore, alerting: Alerting, fingerprints: list[str], now: datetime, reason: str) -> None:
    """Resolve firing alerts; their groups tell of it within their group_interval."""
    resolved = await store.resolve(fingerprints, now, reason)
    if resolved:
        alerting.metrics.resolved.inc(len(resolved))
        log.info("%d alert(s) resolved: %s", len(resolved), reason)
        for group in await store.groups_of(resolved):
            plan = alerting.plans.get(group.route)
            wait, interval = (plan.group_wait, plan.group_interval) if plan is not None else (30.0, 300.0)
            await make_due(store, group, now, wait, interval)


async def make_due(store: AlerterStore, group: Group, now: datetime, group_wait: float, group_interval: float) -> None:
    """A group's alerts changed: it is due per domain.due_after_change."""
    due = domain.due_after_change(
        now, group.created_at, group.last_notified_at, group.next_flush_at, group_wait, group_interval
    )
    await store.set_due(group.key, due)
