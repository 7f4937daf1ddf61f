"""The alerter's records: what its store takes and gives (alerts, groups, notifications,
silences), how a notification changes with a delivery attempt, and the store's interface."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from services.alerter import domain
from services.alerter.config import Matcher


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
