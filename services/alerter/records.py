"""The alerter's records: what its store takes and gives (alerts, groups, notifications,
silences), how a notification changes with a delivery attempt, and the store's interface."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from services.alerter import domain
from services.alerter.config import Matcher
from shared.contract.events import ModelSpecApplied
from shared.contract.spec import ModelSpec


@dataclass(frozen=True)
class AlertRecord:
    """An alert by fingerprint: firing or resolved, with its history and acknowledgement."""

    fingerprint: str
    model: str
    kind: str
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    status: str
    starts_at: datetime
    updated_at: datetime
    ends_at: datetime | None
    resolved_reason: str | None
    times_raised: int
    source_event_type: str
    source_event_id: str
    acked_by: str | None
    acked_at: datetime | None
    ack_comment: str | None

    def member(self) -> domain.Member:
        """The alert as a member of a group."""
        return domain.Member(
            fingerprint=self.fingerprint,
            labels=self.labels,
            annotations=self.annotations,
            status="firing" if self.status == "firing" else "resolved",
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            count=self.times_raised,
            severity=self.severity if self.severity in ("info", "warning", "critical") else "warning",  # type: ignore[arg-type]
            source_event_type=self.source_event_type,
            source_event_id=self.source_event_id,
            resolved_reason=self.resolved_reason,
        )

    def as_dict(self) -> dict[str, Any]:
        """The alert as the API shows it."""
        return {
            "fingerprint": self.fingerprint,
            "model": self.model,
            "kind": self.kind,
            "severity": self.severity,
            "status": self.status,
            "labels": self.labels,
            "annotations": self.annotations,
            "starts_at": self.starts_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "ends_at": self.ends_at.isoformat() if self.ends_at else None,
            "resolved_reason": self.resolved_reason,
            "times_raised": self.times_raised,
            "source_event_type": self.source_event_type,
            "source_event_id": self.source_event_id,
            "acked_by": self.acked_by,
            "acked_at": self.acked_at.isoformat() if self.acked_at else None,
            "ack_comment": self.ack_comment,
        }


@dataclass(frozen=True)
class Group:
    """An aggregation group: a route and its group labels, what it last notified, when it is due."""

    key: str
    route: str
    receiver: str
    group_labels: dict[str, str]
    created_at: datetime
    next_flush_at: datetime | None
    last_notified_at: datetime | None
    notified: dict[str, str]


@dataclass(frozen=True)
class Notification:
    """An entry of the notification log: one group flush for one receiver, pending until sent."""

    id: str
    group_key: str
    receiver: str
    payload: dict[str, Any]
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The notification as the API shows it."""
        return {
            "id": self.id,
            "group_key": self.group_key,
            "receiver": self.receiver,
            "status": self.status,
            "attempts": self.attempts,
            "created_at": self.created_at.isoformat(),
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "last_error": self.last_error,
            "alerts": [a["fingerprint"] for a in self.payload.get("modelbus", {}).get("alerts", [])],
        }


@dataclass(frozen=True)
class SilenceRecord:
    """A silence: matchers and a time range, who made it and why."""

    id: str
    matchers: list[str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime
    expired_by: str | None = None

    def silence(self) -> domain.Silence:
        """The silence as the rules use it."""
        return domain.Silence(self.id, [Matcher.parse(m) for m in self.matchers], self.starts_at, self.ends_at)

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """The silence as the API shows it, with its state now."""
        state = "active" if self.starts_at <= now < self.ends_at else ("pending" if now < self.starts_at else "expired")
        return {
            "id": self.id,
            "matchers": self.matchers,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "created_by": self.created_by,
            "comment": self.comment,
            "created_at": self.created_at.isoformat(),
            "expired_by": self.expired_by,
            "state": state,
        }


def sent(notification: Notification, now: datetime) -> Notification:
    """The notification once a receiver took it."""
    return replace(notification, attempts=notification.attempts + 1, status="sent", sent_at=now, last_error=None)


def failed(notification: Notification, next_attempt_at: datetime, error: str) -> Notification:
    """The notification after a failed attempt, to be tried again at `next_attempt_at`."""
    return replace(
        notification, attempts=notification.attempts + 1, next_attempt_at=next_attempt_at, last_error=error[:2000]
    )


class AlerterStore(Protocol):
    """What the alerter keeps for its platform."""

    @property
    def platform(self) -> str:
        """The topic prefix this store's alerts, groups and notifications belong to."""

    async def keep_spec(self, event: ModelSpecApplied) -> bool:
        """Keep the newest revision of a model's spec; False if an older one arrived late."""

    async def spec_of(self, model: str) -> ModelSpec | None:
        """The spec in force for a model, if any."""

    async def raise_alert(self, alert: domain.Alert, now: datetime) -> bool:
        """Record an alert firing; True if that is news (new, or firing again after it resolved)."""

    async def resolve(self, fingerprints: list[str], now: datetime, reason: str) -> list[str]:
        """Resolve these alerts if firing; the fingerprints that were."""

    async def firing_of(self, model: str) -> list[AlertRecord]:
        """The model's firing alerts."""

    async def keep_resolution(self, resolution: domain.Resolution) -> None:
        """Keep a resolution (per model and kind, the latest) for the events that happened before
        it and arrive after it."""

    async def resolution_of(self, model: str, kind: str) -> domain.Kept | None:
        """The latest resolution kept for a model's alerts of a kind."""

    async def stale(self, before: datetime) -> list[str]:
        """Firing alerts last raised before `before`."""

    async def all_firing(self) -> dict[str, dict[str, str]]:
        """Every firing alert's labels by fingerprint (the inhibition sources)."""

    async def touch_group(
        self,
        key: str,
        route: str,
        receiver: str,
        labels: dict[str, str],
        fingerprint: str,
        now: datetime,
        group_wait: float,
        group_interval: float,
    ) -> None:
        """Put an alert that is news in its group, and make the group due."""

    async def touch_groups_of(
        self, fingerprints: list[str], now: datetime, timings: dict[str, tuple[float, float]]
    ) -> None:
        """Make the groups holding these (changed) alerts due; timings: route -> (group_wait, group_interval)."""

    async def due_groups(self, now: datetime, limit: int = 50) -> list[Group]:
        """Groups due for a flush, locked (another alerter replica skips them)."""

    async def members_of(self, key: str) -> list[AlertRecord]:
        """The alerts of a group."""

    async def flushed(
        self,
        key: str,
        *,
        notified: dict[str, str],
        next_flush_at: datetime | None,
        left: list[str],
        notification: Notification | None,
    ) -> None:
        """A group's flush: what it notified, when it is due again, the resolved alerts that leave it,
        and the notification it wrote (if any)."""

    async def pending(self, now: datetime, limit: int = 20) -> list[Notification]:
        """Notifications due for (another) attempt, locked while they are being sent."""

    async def attempted(self, notification: Notification) -> None:
        """Keep the outcome of a delivery attempt (attempts, status, next attempt, error)."""

    async def waiting(self) -> int:
        """How many notifications still wait to be sent."""

    async def active_silences(self, now: datetime) -> list[domain.Silence]:
        """Silences in force now."""

    async def add_silence(self, silence: SilenceRecord) -> None:
        """Keep a new silence."""
