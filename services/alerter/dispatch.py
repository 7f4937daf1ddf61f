"""Alerts out: a firing alert not raised again within `resolve_timeout` resolves; due groups are
flushed into the notification log (minus silenced and inhibited alerts); pending notifications
are delivered, a failure retried with doubling waits until it goes out. Each step takes a store
in one transaction (SqlStore in the process, MemoryStore in the tests)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta

from services.alerter import domain
from services.alerter.handlers import Alerting, clear
from services.alerter.receivers import Receivers
from services.alerter.records import Group, Notification, failed, sent
from services.alerter.store import AlerterStore

log = logging.getLogger("modelbus.alerter")


async def expire(store: AlerterStore, alerting: Alerting, now: datetime) -> None:
    """Resolve alerts not raised again within resolve_timeout."""
    timeout = alerting.config.resolve_timeout
    old = await store.stale(now - timedelta(seconds=timeout), keep=domain.UNTIL_CLEARED)
    await clear(store, alerting, old, now, f"not raised again for {timeout:.0f} s")


async def dispatch(store: AlerterStore, alerting: Alerting, now: datetime) -> int:
    """Flush the groups that are due into the notification log; returns notifications written."""
    due = await store.due_groups(now)
    if not due:
        return 0
    silences = await store.active_silences(now)
    firing = await store.all_firing()
    written = 0
    for group in due:
        written += await flush(store, alerting, group, silences, firing, now)
    return written


async def flush(
    store: AlerterStore,
    alerting: Alerting,
    group: Group,
    silences: list[domain.Silence],
    firing: dict[str, dict[str, str]],
    now: datetime,
) -> int:
    """One group's flush: a notification of what changed (or of what still fires, on repeat)."""
    members = [alert.member() for alert in await store.members_of(group.key)]
    targets = {m.fingerprint: m.labels for m in members if m.status == "firing"}
    muted = {fp for fp, labels in targets.items() if any(s.mutes(labels, now) for s in silences)}
    muted |= set(domain.inhibited(targets, firing, alerting.config.inhibit_rules))
    flushed = domain.flush(members, group.notified or {}, muted)
    plan = alerting.plans.get(group.route)
    repeat = plan.repeat_interval if plan else 14400.0
    interval = plan.group_interval if plan else 300.0
    notification = None
    if flushed.send:
        notification_id = uuid.uuid4().hex
        order = plan.group_by if plan else ()
        named = {k: group.group_labels[k] for k in order if k in group.group_labels}
        named.update({k: v for k, v in sorted(group.group_labels.items()) if k not in named})
        payload = domain.payload(notification_id, group.receiver, named, flushed.send, now)
        notification = Notification(notification_id, group.key, group.receiver, payload, "pending", 0, now, now)
    await store.flushed(
        group.key,
        notified=dict(flushed.notified),
        next_flush_at=domain.due_after_flush(now, flushed, bool(targets.keys() & muted), repeat, interval),
        left=[m.fingerprint for m in members if m.status == "resolved"],
        notification=notification,
    )
    return 1 if notification is not None else 0


async def deliver(
    store: AlerterStore, alerting: Alerting, receivers: Receivers, now: datetime, *, retry_max_seconds: float
) -> int:
    """Send pending notifications; a failure stays pending and is retried with backoff.

    Groups are sent side by side, but one group's notifications in the order they were written,
    and none after one that failed: a receiver never hears a group's resolution before its firing
    (Alertmanager would reopen what resolved)."""
    due = await store.pending(now)
    by_group: dict[str, list[Notification]] = {}
    for notification in due:
        by_group.setdefault(notification.group_key, []).append(notification)
    tried = await asyncio.gather(*(_in_order(receivers, queue) for queue in by_group.values()))
    done = 0
    # The store's session is one connection: outcomes are kept one after another, after the sends.
    for notification, error in (outcome for outcomes in tried for outcome in outcomes):
        if error is not None:
            delay = min(retry_max_seconds, 2.0**notification.attempts)
            await store.attempted(failed(notification, now + timedelta(seconds=delay), error))
            alerting.metrics.failures.labels(notification.receiver).inc()
            log.warning(
                "notification %s (attempt %d) not delivered, next in %.0f s: %s",
                notification.id,
                notification.attempts + 1,
                delay,
                error,
            )
            continue
        await store.attempted(sent(notification, datetime.now(UTC)))
        alerting.metrics.notifications.labels(notification.receiver).inc()
        done += 1
    alerting.metrics.pending.set(await store.waiting())
    return done


async def _in_order(receivers: Receivers, queue: list[Notification]) -> list[tuple[Notification, str | None]]:
    """Deliver a group's notifications one by one, up to the first that fails: (notification, error)."""
    outcomes: list[tuple[Notification, str | None]] = []
    for notification in queue:
        try:
            await receivers.deliver(notification.receiver, notification.id, notification.payload)
        except Exception as exc:
            outcomes.append((notification, str(exc)))
            break
        outcomes.append((notification, None))
    return outcomes
