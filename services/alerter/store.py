"""The alerter's tables: alerts (history with acknowledgement), groups, the notification log,
silences and the audit of what operators did.

A notification is written in the same transaction that flushes its group, and marked sent only
after its receiver took it: a receiver that is down keeps it pending, and it is retried (across
restarts) until it goes out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Index, Integer, String, Text, delete, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.alerter import domain
from services.alerter.config import Matcher
from shared.runtime.db import Base
from shared.runtime.specview import SpecView, SpecViewColumns


class SpecRow(SpecViewColumns, Base):
    """The spec revision in force per model (its alert labels)."""

    __tablename__ = "alerter_specs"


specs = SpecView(SpecRow)


class AlertRow(Base):
    """An alert by fingerprint: firing or resolved, with its history and acknowledgement."""

    __tablename__ = "alerter_alerts"
    __table_args__ = (Index("alerter_alerts_by_status", "status", "updated_at"),)

    # The topic prefix of the platform it belongs to: alerters of other platforms sharing the
    # database leave it alone.
    platform: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(16), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    labels: Mapped[dict[str, str]] = mapped_column(JSONB)
    annotations: Mapped[dict[str, str]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolved_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    times_raised: Mapped[int] = mapped_column(Integer, default=1)
    source_event_type: Mapped[str] = mapped_column(String(64))
    source_event_id: Mapped[str] = mapped_column(String(128))
    acked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ack_comment: Mapped[str | None] = mapped_column(Text, nullable=True)

    def member(self) -> domain.Member:
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


class GroupRow(Base):
    """An aggregation group: a route and its group labels, and when it is next due."""

    __tablename__ = "alerter_groups"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    platform: Mapped[str] = mapped_column(String(200), index=True)
    route: Mapped[str] = mapped_column(String(64))
    receiver: Mapped[str] = mapped_column(String(100))
    group_labels: Mapped[dict[str, str]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_flush_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    last_notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    notified: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)


class MemberRow(Base):
    """An alert's place in a group."""

    __tablename__ = "alerter_group_alerts"

    group_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(16), primary_key=True, index=True)


class NotificationRow(Base):
    """The notification log: one row per group flush and receiver, pending until sent."""

    __tablename__ = "alerter_notifications"
    __table_args__ = (Index("alerter_notifications_pending", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    platform: Mapped[str] = mapped_column(String(200))
    group_key: Mapped[str] = mapped_column(String(64), index=True)
    receiver: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    def as_dict(self) -> dict[str, Any]:
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


class SilenceRow(Base):
    """A silence: matchers and a time range, who made it and why."""

    __tablename__ = "alerter_silences"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    platform: Mapped[str] = mapped_column(String(200))
    matchers: Mapped[list[str]] = mapped_column(JSONB)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_by: Mapped[str] = mapped_column(String(128))
    comment: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expired_by: Mapped[str | None] = mapped_column(String(128), nullable=True)

    def silence(self) -> domain.Silence:
        return domain.Silence(self.id, [Matcher.parse(m) for m in self.matchers], self.starts_at, self.ends_at)

    def as_dict(self, now: datetime) -> dict[str, Any]:
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


class AuditRow(Base):
    """What an operator did to alerts and silences."""

    __tablename__ = "alerter_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB)


# ---------------------------------------------------------------- alerts


async def raise_alert(session: AsyncSession, platform: str, alert: domain.Alert, now: datetime) -> bool:
    """Record an alert firing; True if that is news (new, or firing again after it resolved).

    A repeat of a firing alert only refreshes it (annotations, time, count).
    """
    labels = alert.labels
    values = {
        "model": alert.model,
        "kind": labels.get("kind", ""),
        "severity": alert.severity,
        "labels": labels,
        "annotations": alert.annotations,
        "updated_at": now,
        "source_event_type": alert.source_event_type,
        "source_event_id": alert.source_event_id,
    }
    stmt = insert(AlertRow).values(
        platform=platform, fingerprint=alert.fingerprint, status="firing", starts_at=now, times_raised=1, **values
    )
    was = await session.scalar(
        select(AlertRow.status)
        .where(AlertRow.platform == platform, AlertRow.fingerprint == alert.fingerprint)
        .with_for_update()
    )
    refiring = was == "resolved"
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[AlertRow.platform, AlertRow.fingerprint],
            set_={
                **values,
                "status": "firing",
                "times_raised": AlertRow.times_raised + 1,
                # Firing again after it resolved: a new episode, unacknowledged.
                **(
                    {"starts_at": now, "ends_at": None, "resolved_reason": None, "acked_by": None, "acked_at": None}
                    if refiring
                    else {}
                ),
            },
        )
    )
    return domain.is_news(was)


async def resolve(
    session: AsyncSession, platform: str, fingerprints: list[str], now: datetime, reason: str
) -> list[str]:
    """Resolve these alerts if firing; the fingerprints that were."""
    if not fingerprints:
        return []
    done = await session.execute(
        update(AlertRow)
        .where(AlertRow.platform == platform, AlertRow.fingerprint.in_(fingerprints), AlertRow.status == "firing")
        .values(status="resolved", ends_at=now, resolved_reason=reason[:2000])
        .returning(AlertRow.fingerprint)
    )
    return list(done.scalars().all())


async def firing_of(session: AsyncSession, platform: str, model: str) -> list[AlertRow]:
    """The model's firing alerts."""
    found = await session.scalars(
        select(AlertRow).where(AlertRow.platform == platform, AlertRow.model == model, AlertRow.status == "firing")
    )
    return list(found.all())


async def stale(session: AsyncSession, platform: str, before: datetime) -> list[str]:
    """Firing alerts last raised before `before`."""
    found = await session.scalars(
        select(AlertRow.fingerprint).where(
            AlertRow.platform == platform, AlertRow.status == "firing", AlertRow.updated_at < before
        )
    )
    return list(found.all())


async def all_firing(session: AsyncSession, platform: str) -> dict[str, dict[str, str]]:
    """Every firing alert's labels by fingerprint (the inhibition sources)."""
    rows = await session.execute(
        select(AlertRow.fingerprint, AlertRow.labels).where(AlertRow.platform == platform, AlertRow.status == "firing")
    )
    return {fp: labels for fp, labels in rows.all()}


# ---------------------------------------------------------------- groups


async def touch_group(
    session: AsyncSession,
    platform: str,
    key: str,
    route: str,
    receiver: str,
    labels: dict[str, str],
    fingerprint: str,
    now: datetime,
    group_wait: float,
    group_interval: float,
) -> None:
    """Put an alert that is news in its group, and make the group due (see domain.due_after_change)."""
    await session.execute(
        insert(GroupRow)
        .values(
            key=key, platform=platform, route=route, receiver=receiver, group_labels=labels, created_at=now, notified={}
        )
        .on_conflict_do_nothing()
    )
    group = await session.get(GroupRow, key, with_for_update=True, populate_existing=True)
    assert group is not None
    group.next_flush_at = domain.due_after_change(
        now, group.created_at, group.last_notified_at, group.next_flush_at, group_wait, group_interval
    )
    await session.execute(insert(MemberRow).values(group_key=key, fingerprint=fingerprint).on_conflict_do_nothing())


async def touch_groups_of(
    session: AsyncSession,
    platform: str,
    fingerprints: list[str],
    now: datetime,
    timings: dict[str, tuple[float, float]],
) -> None:
    """Make the groups holding these (changed) alerts due; timings: route -> (group_wait, group_interval)."""
    if not fingerprints:
        return
    keys = (await session.scalars(select(MemberRow.group_key).where(MemberRow.fingerprint.in_(fingerprints)))).all()
    for key in sorted(set(keys)):
        group = await session.get(GroupRow, key, with_for_update=True, populate_existing=True)
        if group is not None and group.platform == platform:
            wait, interval = timings.get(group.route, (30.0, 300.0))
            group.next_flush_at = domain.due_after_change(
                now, group.created_at, group.last_notified_at, group.next_flush_at, wait, interval
            )


async def due_groups(session: AsyncSession, platform: str, now: datetime, limit: int = 50) -> list[GroupRow]:
    """Groups due for a flush, locked (another alerter replica skips them)."""
    found = await session.scalars(
        select(GroupRow)
        .where(GroupRow.platform == platform, GroupRow.next_flush_at <= now)
        .order_by(GroupRow.next_flush_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(found.all())


async def members_of(session: AsyncSession, group: GroupRow) -> list[AlertRow]:
    """The alerts of a group."""
    found = await session.scalars(
        select(AlertRow)
        .join(MemberRow, MemberRow.fingerprint == AlertRow.fingerprint)
        .where(MemberRow.group_key == group.key, AlertRow.platform == group.platform)
    )
    return list(found.all())


async def leave_group(session: AsyncSession, key: str, fingerprints: list[str]) -> None:
    """Take resolved (and notified) alerts out of a group."""
    if fingerprints:
        await session.execute(
            delete(MemberRow).where(MemberRow.group_key == key, MemberRow.fingerprint.in_(fingerprints))
        )


# ---------------------------------------------------------------- notifications


async def pending(session: AsyncSession, platform: str, now: datetime, limit: int = 20) -> list[NotificationRow]:
    """Notifications due for (another) attempt, locked while they are being sent."""
    found = await session.scalars(
        select(NotificationRow)
        .where(
            NotificationRow.platform == platform,
            NotificationRow.status == "pending",
            NotificationRow.next_attempt_at <= now,
        )
        .order_by(NotificationRow.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(found.all())


# ---------------------------------------------------------------- silences


async def active_silences(session: AsyncSession, platform: str, now: datetime) -> list[domain.Silence]:
    """Silences in force now."""
    found = await session.scalars(
        select(SilenceRow).where(SilenceRow.platform == platform, SilenceRow.starts_at <= now, SilenceRow.ends_at > now)
    )
    return [row.silence() for row in found.all()]


async def silences(session: AsyncSession, platform: str, *, include_expired: bool, now: datetime) -> list[SilenceRow]:
    """Silences, newest first."""
    query = select(SilenceRow).where(SilenceRow.platform == platform).order_by(SilenceRow.created_at.desc()).limit(500)
    if not include_expired:
        query = query.where(SilenceRow.ends_at > now)
    return list((await session.scalars(query)).all())


async def alerts(
    session: AsyncSession, platform: str, *, status: str | None, model: str | None, kind: str | None, limit: int
) -> list[AlertRow]:
    """Alerts, most recently raised first."""
    query = select(AlertRow).where(AlertRow.platform == platform).order_by(AlertRow.updated_at.desc()).limit(limit)
    if status:
        query = query.where(AlertRow.status == status)
    if model:
        query = query.where(AlertRow.model == model)
    if kind:
        query = query.where(AlertRow.kind == kind)
    return list((await session.scalars(query)).all())


async def notifications_of(session: AsyncSession, platform: str, fingerprint: str) -> list[NotificationRow]:
    """The notifications that carried an alert, newest first."""
    keys = select(MemberRow.group_key).where(MemberRow.fingerprint == fingerprint).scalar_subquery()
    found = await session.scalars(
        select(NotificationRow)
        .where(
            NotificationRow.platform == platform,
            or_(
                NotificationRow.group_key.in_(keys),
                NotificationRow.payload["modelbus"]["alerts"].contains([{"fingerprint": fingerprint}]),
            ),
        )
        .order_by(NotificationRow.created_at.desc())
        .limit(50)
    )
    return list(found.all())


def audit(session: AsyncSession, actor: str, action: str, target: str, now: datetime, **detail: Any) -> None:
    """Record an operator's action."""
    session.add(AuditRow(at=now, actor=actor, action=action, target=target, detail=detail))
