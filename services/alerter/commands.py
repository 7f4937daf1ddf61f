"""What operators ask of the alerter, as commands, and their handlers through the unit of work
(`shared.runtime.commands`). Both HTTP APIs, modelbus' `/v1` and Alertmanager's `/api/v2`, build
the same commands, so a silence follows one set of rules, Alertmanager's: it starts no earlier
than now, ends after it starts, and has a matcher that does not match the empty string."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from services.alerter import access
from services.alerter.config import EMPTY_SILENCE, Matcher, mutes_everything
from services.alerter.records import AlertRecord, SilenceRecord
from services.alerter.store import AlerterStore
from shared.runtime.commands import CommandWork


class Refused(ValueError):
    """A command the alerter will not carry out; the message says why."""


class NotFound(LookupError):
    """An alert or a silence that does not exist."""


Store = AlerterStore
Work = CommandWork[AlerterStore]


@dataclass(frozen=True, kw_only=True)
class CreateSilence:
    """Mute the alerts matching every matcher from `starts_at` (None: now) to `ends_at`; with
    `replaces`, end that silence first (Alertmanager's update: the new one gets a new id)."""

    actor: str
    subject: str = ""  # the provider's id of the actor (an OpenID Connect token's subject)
    workspaces: frozenset[str] | None = None  # where the actor is an operator (None: every workspace)
    matchers: list[str]
    ends_at: datetime
    now: datetime
    starts_at: datetime | None = None
    created_by: str = ""
    comment: str = ""
    replaces: str | None = None
    api: str | None = None  # which API asked, kept in the audit log


@dataclass(frozen=True, kw_only=True)
class ExpireSilence:
    """End a silence now (a pending one ends before it began)."""

    actor: str
    subject: str = ""  # the provider's id of the actor (an OpenID Connect token's subject)
    workspaces: frozenset[str] | None = None  # where the actor is an operator (None: every workspace)
    silence_id: str
    now: datetime
    api: str | None = None


@dataclass(frozen=True, kw_only=True)
class Acknowledge:
    """Someone is on an alert (it keeps notifying; a silence mutes it)."""

    actor: str
    subject: str = ""  # the provider's id of the actor (an OpenID Connect token's subject)
    workspaces: frozenset[str] | None = None  # where the actor is an operator (None: every workspace)
    fingerprint: str
    now: datetime
    comment: str = ""


def _via(api: str | None) -> dict[str, str]:
    return {"api": api} if api else {}


async def create_silence(command: CreateSilence, uow: Work) -> SilenceRecord:
    if mutes_everything([Matcher.parse(m) for m in command.matchers]):
        raise Refused(EMPTY_SILENCE)
    access.check_silence(command.workspaces, command.matchers, command.actor)
    starts = max(command.starts_at or command.now, command.now)
    if command.ends_at <= starts:
        raise Refused("the end time must be after the start time (and after now)")
    record = SilenceRecord(
        id=str(uuid.uuid4()),
        matchers=list(command.matchers),
        starts_at=starts,
        ends_at=command.ends_at,
        created_by=command.created_by or command.actor,
        comment=command.comment,
        created_at=command.now,
    )
    if command.replaces:
        replaced = await uow.store.silence(command.replaces)
        if replaced is None:
            raise NotFound(f"silence {command.replaces} not found")
        access.check_silence(command.workspaces, replaced.matchers, command.actor)
        await uow.store.expire_silence(command.replaces, command.now, command.actor)
        await uow.store.audit(
            command.actor,
            "expire-silence",
            command.replaces,
            command.now,
            subject=command.subject,
            replaced_by=record.id,
            **_via(command.api),
        )
    await uow.store.add_silence(record)
    await uow.store.audit(
        command.actor,
        "silence",
        record.id,
        command.now,
        subject=command.subject,
        matchers=record.matchers,
        ends_at=record.ends_at.isoformat(),
        comment=record.comment,
        created_by=record.created_by,
        **_via(command.api),
    )
    return record


async def expire_silence(command: ExpireSilence, uow: Work) -> SilenceRecord:
    existing = await uow.store.silence(command.silence_id)
    if existing is not None:
        access.check_silence(command.workspaces, existing.matchers, command.actor)
    found = await uow.store.expire_silence(command.silence_id, command.now, command.actor)
    if found is None:
        raise NotFound(f"silence {command.silence_id} not found")
    silence, ended = found
    if ended:
        await uow.store.audit(
            command.actor,
            "expire-silence",
            command.silence_id,
            command.now,
            subject=command.subject,
            **_via(command.api),
        )
    return silence


async def acknowledge(command: Acknowledge, uow: Work) -> AlertRecord:
    existing = await uow.store.alert(command.fingerprint)
    if existing is not None:
        access.check_alert(command.workspaces, existing.labels, command.actor)
    acked = await uow.store.acknowledge(command.fingerprint, command.actor, command.now, command.comment)
    if acked is None:
        raise NotFound(f"no alert has the fingerprint {command.fingerprint!r}")
    await uow.store.audit(
        command.actor, "ack", command.fingerprint, command.now, subject=command.subject, comment=command.comment
    )
    return acked
