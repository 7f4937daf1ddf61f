"""The alerter's store in dictionaries: the twin of SqlStore for the handler and dispatch tests
(one contract test runs on both)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from services.alerter import domain
from services.alerter.records import AlertRecord, Group, Notification, SilenceRecord
from shared.runtime.memory import MemorySpecs


@dataclass
class MemoryStore(MemorySpecs):
    """What the alerter keeps for its platform, in memory."""

    platform: str = "modelbus"
    alerts: dict[str, AlertRecord] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    notifications: dict[str, Notification] = field(default_factory=dict)
    silences: dict[str, SilenceRecord] = field(default_factory=dict)
    resolutions: dict[tuple[str, str], domain.Kept] = field(default_factory=dict)
    audits: list[dict[str, Any]] = field(default_factory=list)

    async def raise_alert(self, alert: domain.Alert, now: datetime) -> str | None:
        """Record an alert firing; its status before, None if it is new (see AlerterStore)."""
        was = self.alerts.get(alert.fingerprint)
        fresh = AlertRecord(
            alert.fingerprint,
            alert.model,
            alert.labels.get("kind", ""),
            alert.severity,
            alert.labels,
            alert.annotations,
            "firing",
            now,
            now,
            None,
            None,
            1,
            alert.source_event_type,
            alert.source_event_id,
            None,
            None,
            None,
        )
        if was is not None and was.status == "firing":  # a repeat: the same episode, refreshed
            fresh = replace(
                was,
                model=fresh.model,
                kind=fresh.kind,
                severity=fresh.severity,
                labels=fresh.labels,
                annotations=fresh.annotations,
                updated_at=now,
                source_event_type=fresh.source_event_type,
                source_event_id=fresh.source_event_id,
                times_raised=was.times_raised + 1,
            )
        elif was is not None:  # firing again after it resolved: a new episode, unacknowledged
            fresh = replace(fresh, times_raised=was.times_raised + 1, ack_comment=was.ack_comment)
        self.alerts[alert.fingerprint] = fresh
        return was.status if was is not None else None

    async def resolve(self, fingerprints: list[str], now: datetime, reason: str) -> list[str]:
        """Resolve these alerts if firing; the fingerprints that were."""
        done = []
        for fingerprint in fingerprints:
            alert = self.alerts.get(fingerprint)
            if alert is not None and alert.status == "firing":
                self.alerts[fingerprint] = replace(alert, status="resolved", ends_at=now, resolved_reason=reason[:2000])
                done.append(fingerprint)
        return done

    async def keep_resolution(self, resolution: domain.Resolution) -> None:
        """Keep a resolution (per model and kind, the latest) for the events that happened before
        it and arrive after it."""
        if resolution.at is None:
            return
        for kind in resolution.kinds:
            kept = self.resolutions.get((resolution.model, kind))
            if kept is None or kept.at <= resolution.at:
                self.resolutions[resolution.model, kind] = domain.Kept(
                    resolution.reason, resolution.at, resolution.below_version
                )

    async def resolution_of(self, model: str, kind: str) -> domain.Kept | None:
        """The latest resolution kept for a model's alerts of a kind."""
        return self.resolutions.get((model, kind))

    async def alert(self, fingerprint: str, *, lock: bool = False) -> AlertRecord | None:
        """One alert."""
        return self.alerts.get(fingerprint)

    async def silence(self, silence_id: str) -> SilenceRecord | None:
        """One silence."""
        return self.silences.get(silence_id)

    async def firing_of(self, model: str) -> list[AlertRecord]:
        """The model's firing alerts."""
        return [a for a in self.alerts.values() if a.model == model and a.status == "firing"]

    async def stale(self, before: datetime, *, keep: frozenset[str]) -> list[str]:
        """Firing alerts last raised before `before`, but those of the kinds in `keep`."""
        return [
            a.fingerprint
            for a in self.alerts.values()
            if a.status == "firing" and a.updated_at < before and a.kind not in keep
        ]

    async def all_firing(self) -> dict[str, dict[str, str]]:
        """Every firing alert's labels by fingerprint (the inhibition sources)."""
        return {a.fingerprint: a.labels for a in self.alerts.values() if a.status == "firing"}

    async def join_group(
        self, key: str, route: str, receiver: str, labels: dict[str, str], fingerprint: str, now: datetime
    ) -> Group:
        """Put an alert in its group (formed now if it is new); the group."""
        group = self.groups.setdefault(key, Group(key, route, receiver, labels, now, None, None, {}))
        if fingerprint not in self.members.setdefault(key, []):
            self.members[key].append(fingerprint)
        return group

    async def groups_of(self, fingerprints: list[str]) -> list[Group]:
        """The groups holding these alerts."""
        return [
            self.groups[key] for key in sorted(k for k, held in self.members.items() if set(held) & set(fingerprints))
        ]

    async def set_due(self, key: str, when: datetime) -> None:
        """When a group is next due for a flush."""
        self.groups[key] = replace(self.groups[key], next_flush_at=when)

    async def due_groups(self, now: datetime, limit: int = 50) -> list[Group]:
        """Groups due for a flush."""
        due = [g for g in self.groups.values() if g.next_flush_at is not None and g.next_flush_at <= now]
        return sorted(due, key=lambda g: g.next_flush_at or now)[:limit]

    async def members_of(self, key: str) -> list[AlertRecord]:
        """The alerts of a group."""
        return [self.alerts[fp] for fp in self.members.get(key, []) if fp in self.alerts]

    async def flushed(
        self,
        key: str,
        *,
        notified: dict[str, str],
        next_flush_at: datetime | None,
        left: list[str],
        notification: Notification | None,
    ) -> None:
        """A group's flush: what it notified, when it is due again, who leaves it, what it wrote."""
        group = replace(self.groups[key], notified=notified, next_flush_at=next_flush_at)
        if notification is not None:
            self.notifications[notification.id] = notification
            group = replace(group, last_notified_at=notification.created_at)
        self.groups[key] = group
        self.members[key] = [fp for fp in self.members.get(key, []) if fp not in left]

    async def pending(self, now: datetime, limit: int = 20) -> list[Notification]:
        """Notifications due for (another) attempt."""
        due = [n for n in self.notifications.values() if n.status == "pending" and n.next_attempt_at <= now]
        return sorted(due, key=lambda n: n.created_at)[:limit]

    async def attempted(self, notification: Notification) -> None:
        """Keep the outcome of a delivery attempt."""
        self.notifications[notification.id] = notification

    async def waiting(self) -> int:
        """How many notifications still wait to be sent."""
        return sum(1 for n in self.notifications.values() if n.status == "pending")

    async def active_silences(self, now: datetime) -> list[domain.Silence]:
        """Silences in force now."""
        return [s.silence() for s in self.silences.values() if s.starts_at <= now < s.ends_at]

    async def add_silence(self, silence: SilenceRecord) -> None:
        """Keep a new silence."""
        self.silences[silence.id] = silence

    async def expire_silence(self, silence_id: str, now: datetime, actor: str) -> tuple[SilenceRecord, bool] | None:
        """End a silence now; (the silence, whether it was still in force), or None if there is none."""
        found = self.silences.get(silence_id)
        if found is None:
            return None
        ended = found.ends_at > now
        if ended:  # a pending silence ends before it began, as Alertmanager expires it
            found = replace(found, starts_at=min(now, found.starts_at), ends_at=now, expired_by=actor)
            self.silences[silence_id] = found
        return found, ended

    async def acknowledge(self, fingerprint: str, actor: str, now: datetime, comment: str) -> AlertRecord | None:
        """Note who is on an alert; None if there is no such alert."""
        found = self.alerts.get(fingerprint)
        if found is None:
            return None
        self.alerts[fingerprint] = replace(found, acked_by=actor, acked_at=now, ack_comment=comment)
        return self.alerts[fingerprint]

    async def audit(
        self, actor: str, action: str, target: str, now: datetime, *, subject: str = "", **detail: Any
    ) -> None:
        """Record an operator's action."""
        self.audits.append(
            {
                "at": now.isoformat(),
                "actor": actor,
                "subject": subject,
                "action": action,
                "target": target,
                "detail": detail,
            }
        )

    async def audit_log(self, *, target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Operators' actions on alerts and silences, newest first."""
        return [a for a in reversed(self.audits) if target is None or a["target"] == target][:limit]
