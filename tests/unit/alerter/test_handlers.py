"""The alerter's handlers and dispatch on its in-memory store: alerts raised and cleared by events,
grouped and notified after group_wait, refreshed rather than repeated, muted by silences and
inhibitions, retried until a receiver takes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.alerter import app, dispatch
from services.alerter.config import load_config
from services.alerter.memory import MemoryStore
from services.alerter.records import SilenceRecord
from shared.contract.events import (
    DeadLettered,
    DriftDetected,
    ModelTrained,
    RetrainSkipped,
    RolloutChanged,
    TrafficShare,
)
from shared.runtime.memory import InMemoryBus
from tests.support.examples import example
from tests.support.specs import spec_applied

CONFIG = load_config(None)
MODEL = "churn"


@dataclass
class FakeReceivers:
    """Takes notifications (or refuses them while `down`) and remembers what it took."""

    down: bool = False
    taken: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    async def deliver(self, receiver: str, notification_id: str, payload: dict[str, Any]) -> None:
        if self.down:
            raise ConnectionError("receiver unreachable")
        self.taken.append((receiver, notification_id, payload))


def drift(version: int = 1) -> DriftDetected:
    return example(DriftDetected, model=MODEL, version=version)


def promoted(version: int) -> RolloutChanged:
    return example(
        RolloutChanged,
        model=MODEL,
        candidate_version=version,
        stable_version=version - 1,
        to_state="promoted",
        traffic=[TrafficShare(version=version, percent=100, role="stable")],
    )


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def round_at(bus: InMemoryBus[MemoryStore], receivers: FakeReceivers, now: datetime) -> int:
    """One alerter round (expire, flush, deliver) at `now`; returns notifications delivered."""
    alerting = bus.handlers[DriftDetected][0].keywords["alerting"]  # type: ignore[attr-defined]
    await dispatch.expire(bus.store, alerting, now)
    await dispatch.dispatch(bus.store, alerting, now)
    return await dispatch.deliver(bus.store, alerting, receivers, now, retry_max_seconds=60)  # type: ignore[arg-type]


async def test_a_drift_fires_an_alert_with_the_models_labels() -> None:
    bus = app.in_memory(CONFIG)
    await bus.handle(spec_applied(MODEL))
    await bus.handle(drift())
    [alert] = bus.store.alerts.values()
    assert (alert.status, alert.kind, alert.model, alert.labels["team"]) == ("firing", "drift", MODEL, "growth")
    assert "drift in" in alert.annotations["summary"]


async def test_a_new_group_is_notified_after_group_wait_and_not_before() -> None:
    bus, receivers = app.in_memory(CONFIG), FakeReceivers()
    await bus.handle(drift())
    assert await round_at(bus, receivers, later(5)) == 0
    assert await round_at(bus, receivers, later(31)) == 1
    [(receiver, _, payload)] = receivers.taken
    assert receiver == "default"
    assert [a["fingerprint"] for a in payload["modelbus"]["alerts"]] == list(bus.store.alerts)


async def test_the_same_drift_again_refreshes_the_alert_without_a_second_notification() -> None:
    bus, receivers = app.in_memory(CONFIG), FakeReceivers()
    await bus.handle(drift())
    await round_at(bus, receivers, later(31))
    await bus.handle(drift())
    assert await round_at(bus, receivers, later(60)) == 0
    [alert] = bus.store.alerts.values()
    assert alert.times_raised == 2 and len(receivers.taken) == 1


async def test_a_promotion_resolves_the_models_drift_and_the_group_says_so() -> None:
    bus, receivers = app.in_memory(CONFIG), FakeReceivers()
    await bus.handle(drift())
    await round_at(bus, receivers, later(31))
    await bus.handle(promoted(2))
    [alert] = bus.store.alerts.values()
    assert alert.status == "resolved" and "promoted" in (alert.resolved_reason or "")
    assert await round_at(bus, receivers, later(31 + 301)) == 1
    statuses = [a["status"] for a in receivers.taken[-1][2]["modelbus"]["alerts"]]
    assert statuses == ["resolved"]


async def test_a_silenced_alert_is_left_out_of_its_notification() -> None:
    bus, receivers = app.in_memory(CONFIG), FakeReceivers()
    now = datetime.now(UTC)
    await bus.store.add_silence(
        SilenceRecord(
            "s-1", [f'model="{MODEL}"'], now - timedelta(minutes=1), now + timedelta(hours=1), "ops", "work", now
        )
    )
    await bus.handle(drift())
    assert await round_at(bus, receivers, later(31)) == 0
    assert receivers.taken == []


async def test_a_dead_letter_is_an_alert_of_the_platform() -> None:
    bus = app.in_memory(CONFIG)
    await bus.handle(example(DeadLettered))
    [alert] = bus.store.alerts.values()
    assert (alert.model, alert.kind, alert.labels["team"]) == ("-", "dead-letter", "platform")


async def test_a_notification_a_receiver_refuses_stays_pending_and_goes_out_once_it_is_back() -> None:
    bus, receivers = app.in_memory(CONFIG), FakeReceivers(down=True)
    await bus.handle(drift())
    assert await round_at(bus, receivers, later(31)) == 0
    [waiting] = bus.store.notifications.values()
    assert (waiting.status, waiting.attempts, waiting.last_error) == ("pending", 1, "receiver unreachable")
    receivers.down = False
    assert await round_at(bus, receivers, later(31.5)) == 0  # the next attempt waits its backoff (1 s)
    assert await round_at(bus, receivers, later(40)) == 1
    [done] = bus.store.notifications.values()
    assert (done.status, done.attempts) == ("sent", 2)


async def test_an_alert_not_raised_again_within_the_resolve_timeout_resolves_by_itself() -> None:
    bus, receivers = app.in_memory(CONFIG), FakeReceivers()
    await bus.handle(drift())
    await round_at(bus, receivers, later(CONFIG.resolve_timeout + 1))
    [alert] = bus.store.alerts.values()
    assert alert.status == "resolved" and "not raised again" in (alert.resolved_reason or "")


async def test_a_redelivered_event_raises_nothing_twice() -> None:
    bus = app.in_memory(CONFIG)
    await bus.handle(drift(), event_id="d-1")
    await bus.handle(drift(), event_id="d-1")
    [alert] = bus.store.alerts.values()
    assert alert.times_raised == 1


def skipped(version: int = 1) -> RetrainSkipped:
    return example(RetrainSkipped, model=MODEL, version=version)


async def test_a_skipped_retrain_is_one_alert_that_stays_open_until_a_training_succeeds() -> None:
    bus, receivers = app.in_memory(CONFIG), FakeReceivers()
    await bus.handle(spec_applied(MODEL))
    for _ in range(5):  # one RetrainSkipped per cooldown: the same alert, refreshed
        await bus.handle(skipped())
    [alert] = bus.store.alerts.values()
    assert (alert.kind, alert.status, alert.times_raised) == ("retrain-skipped", "firing", 5)
    assert "no data newer than v1's dataset" in alert.annotations["summary"]
    assert await round_at(bus, receivers, later(31)) == 1
    # Not raised again for longer than resolve_timeout: it stays open (nothing changed), and its
    # group is notified again only on repeat_interval.
    assert await round_at(bus, receivers, later(CONFIG.resolve_timeout + 60)) == 0
    assert alert.status == "firing" and len(receivers.taken) == 1
    await bus.handle(example(ModelTrained, model=MODEL))
    [alert] = bus.store.alerts.values()
    assert alert.status == "resolved" and "succeeded" in (alert.resolved_reason or "")
