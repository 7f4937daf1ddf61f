"""The alerter's store: alerts, aggregation groups, the notification log, silences and the audit
log of one platform (its topic prefix), as records, never rows.

`SqlStore` keeps them in PostgreSQL; `MemoryStore` (services.alerter.memory) is its in-memory twin
for the handler and dispatch tests, and one contract test runs on both; the interface they share,
`AlerterStore`, is here. The rules (what is news, when a group is due, which alerts stay until
cleared) are in services.alerter.domain and applied by the handlers; the stores only keep.
Alerters of other platforms sharing the database never see this platform's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerter import domain
from services.alerter.records import AlertRecord, Group, Notification, SilenceRecord
from services.alerter.tables import (
    SPECS,
    AlertRow,
    AuditRow,
    GroupRow,
    MemberRow,
    NotificationRow,
    ResolutionRow,
    SilenceRow,
)
from shared.contract.events import ModelSpecApplied
from shared.contract.spec import ModelSpec
from shared.runtime.specview import SpecView, SqlSpecs


class AlerterStore(Protocol):
    """What the alerter keeps for its platform."""

    @property
    def platform(self) -> str:
        """The topic prefix this store's alerts, groups and notifications belong to."""

    async def keep_spec(self, event: ModelSpecApplied) -> bool:
        """Keep the newest revision of a model's spec; False if an older one arrived late."""

    async def spec_of(self, model: str) -> ModelSpec | None:
        """The spec in force for a model, if any."""

    async def raise_alert(self, alert: domain.Alert, now: datetime) -> str | None:
        """Record an alert firing: a repeat of a firing alert refreshes it (annotations, time,
        count); firing again after it resolved starts a new, unacknowledged episode. Its status
        before, None if it is new."""

    async def resolve(self, fingerprints: list[str], now: datetime, reason: str) -> list[str]:
        """Resolve these alerts if firing; the fingerprints that were."""

    async def firing_of(self, model: str) -> list[AlertRecord]:
        """The model's firing alerts."""

    async def alert(self, fingerprint: str, *, lock: bool = False) -> AlertRecord | None:
        """One alert (locked until the transaction ends, if `lock`)."""

    async def silence(self, silence_id: str) -> SilenceRecord | None:
        """One silence."""

    async def keep_resolution(self, resolution: domain.Resolution) -> None:
        """Keep a resolution (per model and kind, the latest) for the events that happened before
        it and arrive after it."""

    async def resolution_of(self, model: str, kind: str) -> domain.Kept | None:
        """The latest resolution kept for a model's alerts of a kind."""

    async def stale(self, before: datetime, *, keep: frozenset[str]) -> list[str]:
        """Firing alerts last raised before `before`, but those of the kinds in `keep`."""

    async def all_firing(self) -> dict[str, dict[str, str]]:
        """Every firing alert's labels by fingerprint (the inhibition sources)."""

    async def join_group(
        self, key: str, route: str, receiver: str, labels: dict[str, str], fingerprint: str, now: datetime
    ) -> Group:
        """Put an alert in its group (formed now if it is new); the group, locked."""

    async def groups_of(self, fingerprints: list[str]) -> list[Group]:
        """The groups holding these alerts, locked."""

    async def set_due(self, key: str, when: datetime) -> None:
        """When a group is next due for a flush."""

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

    async def expire_silence(self, silence_id: str, now: datetime, actor: str) -> tuple[SilenceRecord, bool] | None:
        """End a silence now; (the silence, whether it was still in force), or None if there is none."""

    async def acknowledge(self, fingerprint: str, actor: str, now: datetime, comment: str) -> AlertRecord | None:
        """Note who is on an alert; None if there is no such alert."""

    async def audit(
        self, actor: str, action: str, target: str, now: datetime, *, subject: str = "", **detail: Any
    ) -> None:
        """Record an operator's action."""

    async def audit_log(self, *, target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Operators' actions on alerts and silences, newest first."""


def _alert(row: AlertRow) -> AlertRecord:
    return AlertRecord(
        row.fingerprint,
        row.model,
        row.kind,
        row.severity,
        row.labels,
        row.annotations,
        row.status,
        row.starts_at,
        row.updated_at,
        row.ends_at,
        row.resolved_reason,
        row.times_raised,
        row.source_event_type,
        row.source_event_id,
        row.acked_by,
        row.acked_at,
        row.ack_comment,
    )


def _group(row: GroupRow) -> Group:
    return Group(
        row.key,
        row.route,
        row.receiver,
        row.group_labels,
        row.created_at,
        row.next_flush_at,
        row.last_notified_at,
        dict(row.notified or {}),
    )


def _notification(row: NotificationRow) -> Notification:
    return Notification(
        row.id,
        row.group_key,
        row.receiver,
        row.payload,
        row.status,
        row.attempts,
        row.created_at,
        row.next_attempt_at,
        row.sent_at,
        row.last_error,
    )


def _silence(row: SilenceRow) -> SilenceRecord:
    return SilenceRecord(
        row.id, row.matchers, row.starts_at, row.ends_at, row.created_by, row.comment, row.created_at, row.expired_by
    )


@dataclass(frozen=True)
class SqlStore(SqlSpecs):
    """The alerter's tables for one platform, in the transaction of `session`."""

    specs: ClassVar[SpecView] = SPECS
    session: AsyncSession
    platform: str

    # ------------------------------------------------------------ alerts

    async def raise_alert(self, alert: domain.Alert, now: datetime) -> str | None:
        """Record an alert firing; its status before, None if it is new (see AlerterStore)."""
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
            platform=self.platform,
            fingerprint=alert.fingerprint,
            status="firing",
            starts_at=now,
            times_raised=1,
            **values,
        )
        was = await self.session.scalar(
            select(AlertRow.status)
            .where(AlertRow.platform == self.platform, AlertRow.fingerprint == alert.fingerprint)
            .with_for_update()
        )
        refiring = was == "resolved"
        await self.session.execute(
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
        return was

    async def resolve(self, fingerprints: list[str], now: datetime, reason: str) -> list[str]:
        """Resolve these alerts if firing; the fingerprints that were."""
        if not fingerprints:
            return []
        done = await self.session.execute(
            update(AlertRow)
            .where(
                AlertRow.platform == self.platform, AlertRow.fingerprint.in_(fingerprints), AlertRow.status == "firing"
            )
            .values(status="resolved", ends_at=now, resolved_reason=reason[:2000])
            .returning(AlertRow.fingerprint)
        )
        return list(done.scalars().all())

    async def keep_resolution(self, resolution: domain.Resolution) -> None:
        """Keep a resolution (per model and kind, the latest) for the events that happened before
        it and arrive after it."""
        if resolution.at is None:
            return
        for kind in sorted(resolution.kinds):
            values = {
                "reason": resolution.reason[:2000],
                "at": resolution.at,
                "below_version": resolution.below_version,
            }
            await self.session.execute(
                insert(ResolutionRow)
                .values(platform=self.platform, model=resolution.model, kind=kind, **values)
                .on_conflict_do_update(
                    index_elements=[ResolutionRow.platform, ResolutionRow.model, ResolutionRow.kind],
                    set_=values,
                    where=ResolutionRow.at <= resolution.at,
                )
            )

    async def resolution_of(self, model: str, kind: str) -> domain.Kept | None:
        """The latest resolution kept for a model's alerts of a kind."""
        row = await self.session.get(ResolutionRow, (self.platform, model, kind))
        return domain.Kept(row.reason, row.at, row.below_version) if row is not None else None

    async def firing_of(self, model: str) -> list[AlertRecord]:
        """The model's firing alerts."""
        found = await self.session.scalars(
            select(AlertRow)
            .where(AlertRow.platform == self.platform, AlertRow.model == model, AlertRow.status == "firing")
            .execution_options(populate_existing=True)
        )
        return [_alert(row) for row in found.all()]

    async def stale(self, before: datetime, *, keep: frozenset[str]) -> list[str]:
        """Firing alerts last raised before `before`, but those of the kinds in `keep`."""
        found = await self.session.scalars(
            select(AlertRow.fingerprint).where(
                AlertRow.platform == self.platform,
                AlertRow.status == "firing",
                AlertRow.updated_at < before,
                AlertRow.kind.not_in(keep),
            )
        )
        return list(found.all())

    async def all_firing(self) -> dict[str, dict[str, str]]:
        """Every firing alert's labels by fingerprint (the inhibition sources)."""
        rows = await self.session.execute(
            select(AlertRow.fingerprint, AlertRow.labels).where(
                AlertRow.platform == self.platform, AlertRow.status == "firing"
            )
        )
        return {fp: labels for fp, labels in rows.all()}

    async def alert(self, fingerprint: str, *, lock: bool = False) -> AlertRecord | None:
        """One alert by fingerprint."""
        row = await self.session.get(AlertRow, (self.platform, fingerprint), with_for_update=lock)
        return _alert(row) if row is not None else None

    async def acknowledge(self, fingerprint: str, actor: str, now: datetime, comment: str) -> AlertRecord | None:
        """Note who is on an alert; None if there is no such alert."""
        row = await self.session.get(AlertRow, (self.platform, fingerprint), with_for_update=True)
        if row is None:
            return None
        row.acked_by, row.acked_at, row.ack_comment = actor, now, comment
        return _alert(row)

    async def alerts(self, *, status: str | None, model: str | None, kind: str | None, limit: int) -> list[AlertRecord]:
        """Alerts, most recently raised first."""
        query = (
            select(AlertRow).where(AlertRow.platform == self.platform).order_by(AlertRow.updated_at.desc()).limit(limit)
        )
        if status:
            query = query.where(AlertRow.status == status)
        if model:
            query = query.where(AlertRow.model == model)
        if kind:
            query = query.where(AlertRow.kind == kind)
        return [_alert(row) for row in (await self.session.scalars(query)).all()]

    # ------------------------------------------------------------ groups

    async def join_group(
        self, key: str, route: str, receiver: str, labels: dict[str, str], fingerprint: str, now: datetime
    ) -> Group:
        """Put an alert in its group (formed now if it is new); the group, locked."""
        await self.session.execute(
            insert(GroupRow)
            .values(
                key=key,
                platform=self.platform,
                route=route,
                receiver=receiver,
                group_labels=labels,
                created_at=now,
                notified={},
            )
            .on_conflict_do_nothing()
        )
        group = await self.session.get(GroupRow, key, with_for_update=True, populate_existing=True)
        assert group is not None
        await self.session.execute(
            insert(MemberRow).values(group_key=key, fingerprint=fingerprint).on_conflict_do_nothing()
        )
        return _group(group)

    async def groups_of(self, fingerprints: list[str]) -> list[Group]:
        """The groups holding these alerts, locked."""
        if not fingerprints:
            return []
        keys = (
            await self.session.scalars(select(MemberRow.group_key).where(MemberRow.fingerprint.in_(fingerprints)))
        ).all()
        found = []
        for key in sorted(set(keys)):
            group = await self.session.get(GroupRow, key, with_for_update=True, populate_existing=True)
            if group is not None and group.platform == self.platform:
                found.append(_group(group))
        return found

    async def set_due(self, key: str, when: datetime) -> None:
        """When a group is next due for a flush."""
        await self.session.execute(
            update(GroupRow).where(GroupRow.platform == self.platform, GroupRow.key == key).values(next_flush_at=when)
        )

    async def due_groups(self, now: datetime, limit: int = 50) -> list[Group]:
        """Groups due for a flush, locked (another alerter replica skips them)."""
        found = await self.session.scalars(
            select(GroupRow)
            .where(GroupRow.platform == self.platform, GroupRow.next_flush_at <= now)
            .order_by(GroupRow.next_flush_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        return [_group(row) for row in found.all()]

    async def members_of(self, key: str) -> list[AlertRecord]:
        """The alerts of a group."""
        found = await self.session.scalars(
            select(AlertRow)
            .join(MemberRow, MemberRow.fingerprint == AlertRow.fingerprint)
            .where(MemberRow.group_key == key, AlertRow.platform == self.platform)
            .execution_options(populate_existing=True)
        )
        return [_alert(row) for row in found.all()]

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
        values: dict[str, Any] = {"notified": notified, "next_flush_at": next_flush_at}
        if notification is not None:
            self.session.add(NotificationRow(platform=self.platform, **_columns(notification)))
            values["last_notified_at"] = notification.created_at
        await self.session.execute(update(GroupRow).where(GroupRow.key == key).values(**values))
        if left:
            await self.session.execute(
                delete(MemberRow).where(MemberRow.group_key == key, MemberRow.fingerprint.in_(left))
            )

    # ------------------------------------------------------------ notifications

    async def pending(self, now: datetime, limit: int = 20) -> list[Notification]:
        """Notifications due for (another) attempt, locked while they are being sent."""
        found = await self.session.scalars(
            select(NotificationRow)
            .where(
                NotificationRow.platform == self.platform,
                NotificationRow.status == "pending",
                NotificationRow.next_attempt_at <= now,
            )
            .order_by(NotificationRow.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        return [_notification(row) for row in found.all()]

    async def attempted(self, notification: Notification) -> None:
        """Keep the outcome of a delivery attempt (attempts, status, next attempt, error)."""
        await self.session.execute(
            update(NotificationRow)
            .where(NotificationRow.id == notification.id)
            .values(
                attempts=notification.attempts,
                status=notification.status,
                next_attempt_at=notification.next_attempt_at,
                sent_at=notification.sent_at,
                last_error=notification.last_error,
            )
        )

    async def waiting(self) -> int:
        """How many notifications still wait to be sent."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(NotificationRow)
            .where(NotificationRow.platform == self.platform, NotificationRow.status == "pending")
        )
        return int(count or 0)

    async def notifications(self, *, status: str | None, limit: int) -> list[Notification]:
        """The notification log, newest first."""
        query = (
            select(NotificationRow)
            .where(NotificationRow.platform == self.platform)
            .order_by(NotificationRow.created_at.desc())
            .limit(limit)
        )
        if status:
            query = query.where(NotificationRow.status == status)
        return [_notification(row) for row in (await self.session.scalars(query)).all()]

    async def notifications_of(self, fingerprint: str) -> list[Notification]:
        """The notifications that carried an alert, newest first."""
        keys = select(MemberRow.group_key).where(MemberRow.fingerprint == fingerprint).scalar_subquery()
        found = await self.session.scalars(
            select(NotificationRow)
            .where(
                NotificationRow.platform == self.platform,
                or_(
                    NotificationRow.group_key.in_(keys),
                    NotificationRow.payload["modelbus"]["alerts"].contains([{"fingerprint": fingerprint}]),
                ),
            )
            .order_by(NotificationRow.created_at.desc())
            .limit(50)
        )
        return [_notification(row) for row in found.all()]

    # ------------------------------------------------------------ silences and the audit log

    async def active_silences(self, now: datetime) -> list[domain.Silence]:
        """Silences in force now."""
        found = await self.session.scalars(
            select(SilenceRow).where(
                SilenceRow.platform == self.platform, SilenceRow.starts_at <= now, SilenceRow.ends_at > now
            )
        )
        return [_silence(row).silence() for row in found.all()]

    async def silences(self, *, include_expired: bool, now: datetime) -> list[SilenceRecord]:
        """Silences, newest first."""
        query = (
            select(SilenceRow)
            .where(SilenceRow.platform == self.platform)
            .order_by(SilenceRow.created_at.desc())
            .limit(500)
        )
        if not include_expired:
            query = query.where(SilenceRow.ends_at > now)
        return [_silence(row) for row in (await self.session.scalars(query)).all()]

    async def silence(self, silence_id: str) -> SilenceRecord | None:
        """One silence of this platform."""
        row = await self.session.get(SilenceRow, silence_id)
        return _silence(row) if row is not None and row.platform == self.platform else None

    async def add_silence(self, silence: SilenceRecord) -> None:
        """Keep a new silence."""
        self.session.add(SilenceRow(platform=self.platform, **_columns(silence)))

    async def expire_silence(self, silence_id: str, now: datetime, actor: str) -> tuple[SilenceRecord, bool] | None:
        """End a silence now; (the silence, whether it was still in force), or None if there is none."""
        row = await self.session.get(SilenceRow, silence_id, with_for_update=True)
        if row is None or row.platform != self.platform:
            return None
        ended = row.ends_at > now
        if ended:  # a pending silence ends before it began, as Alertmanager expires it: expired, never in force
            row.starts_at, row.ends_at, row.expired_by = min(now, row.starts_at), now, actor
        return _silence(row), ended

    async def audit(
        self, actor: str, action: str, target: str, now: datetime, *, subject: str = "", **detail: Any
    ) -> None:
        """Record an operator's action."""
        self.session.add(AuditRow(at=now, actor=actor, subject=subject, action=action, target=target, detail=detail))

    async def audit_log(self, *, target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Operators' actions on alerts and silences, newest first."""
        query = select(AuditRow)
        if target:
            query = query.where(AuditRow.target == target)
        rows = await self.session.scalars(query.order_by(AuditRow.id.desc()).limit(limit))
        return [
            {
                "at": r.at.isoformat(),
                "actor": r.actor,
                "subject": r.subject,
                "action": r.action,
                "target": r.target,
                "detail": r.detail,
            }
            for r in rows.all()
        ]


def _columns(record: Notification | SilenceRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}
