"""Alertmanager's API v2 on the alerter's port, in Alertmanager's shapes, behind the same tokens:
`amtool --alertmanager.url=http://127.0.0.1:8082`, Karma and Grafana's Alertmanager data source
read the alerts and manage the silences as if modelbus were an Alertmanager.

    GET  /api/v2/status              cluster (disabled), version, the configuration, uptime
    GET  /api/v2/receivers           the receivers' names
    GET  /api/v2/alerts              firing alerts (filter, receiver, active, silenced, inhibited)
    GET  /api/v2/silences            every silence (filter)
    POST /api/v2/silences            a new silence, or a new version of one (`id`): operators
    GET  /api/v2/silence/{id}        one silence
    DELETE /api/v2/silence/{id}      expire it now: operators

Silences made here are the alerter's own (they mute its notifications) and are audited.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alerter import domain, formats
from services.alerter.config import EMPTY_SILENCE, AlerterConfig, Matcher, mutes_everything, plans, routes_for
from services.alerter.records import SilenceRecord
from services.alerter.store import SqlStore
from shared.runtime.httpapi import Operator, Viewer
from shared.runtime.settings import Settings
from shared.runtime.telemetry import code_version

MOST_ALERTS = 10_000
# The Alertmanager release whose API v2 this answers (and whose amtool the tests run): reported as
# versionInfo.version, so amtool and Karma treat the alerter as that Alertmanager; modelbus' own
# release and code revision are in versionInfo.revision.
SPEAKS = "0.25.0"


class AmMatcher(BaseModel):
    """A matcher as Alertmanager's API writes it."""

    name: str = Field(min_length=1, max_length=200)
    value: str = Field(max_length=2000)
    isRegex: bool  # Alertmanager's field names, as they are
    isEqual: bool = True


class PostableSilence(BaseModel):
    """Alertmanager's postableSilence."""

    id: str | None = None
    matchers: list[AmMatcher] = Field(min_length=1, max_length=50)
    startsAt: datetime
    endsAt: datetime
    createdBy: str = Field(min_length=1, max_length=200)
    comment: str = Field(min_length=1, max_length=2000)


def _bad(message: str, status: int = 400) -> JSONResponse:
    """Alertmanager answers errors with a JSON string."""
    return JSONResponse(message, status_code=status)


def _matchers(texts: list[str]) -> list[Matcher]:
    # amtool sends `label="value"`; Alertmanager also takes `{label="value"}`.
    return [Matcher.parse(text.strip().removeprefix("{").removesuffix("}")) for text in texts]


def add_alertmanager_routes(
    api: FastAPI, settings: Settings, config: AlerterConfig, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Answer Alertmanager's API v2 under /api/v2."""
    platform = settings.topic_prefix
    started = datetime.now(UTC)
    route_plans = plans(config)
    original = config.as_yaml()
    tags: list[str | Enum] = ["alertmanager"]

    @api.get("/api/v2/status", tags=tags)
    async def status(_: Viewer) -> dict[str, Any]:
        """Alertmanager's status: no cluster, modelbus' version, the configuration, uptime."""
        return {
            "cluster": {"status": "disabled", "peers": []},
            "versionInfo": {
                "version": SPEAKS,
                "revision": f"modelbus-{code_version()}",
                "branch": "modelbus",
                "buildUser": "modelbus",
                "buildDate": "",
                "goVersion": "",
            },
            "config": {"original": original},
            "uptime": formats.rfc3339(started.isoformat()),
        }

    @api.get("/api/v2/receivers", tags=tags)
    async def receivers(_: Viewer) -> list[dict[str, str]]:
        """The receivers' names."""
        return [{"name": receiver.name} for receiver in config.receivers]

    @api.get("/api/v2/alerts", tags=tags, response_model=None)
    async def alerts(
        _: Viewer,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        unprocessed: bool = True,  # accepted; the alerter takes an alert in as it comes: none is unprocessed
        filter: Annotated[list[str] | None, Query()] = None,
        receiver: str | None = None,
    ) -> list[dict[str, Any]] | JSONResponse:
        """Firing alerts, as Alertmanager lists them."""
        try:
            wanted = _matchers(filter or [])
            by_receiver = Matcher.parse(f'receiver=~"{receiver}"') if receiver else None
        except ValueError as exc:
            return _bad(str(exc))
        now = datetime.now(UTC)
        async with sessions() as session:
            kept = SqlStore(session, platform)
            rows = await kept.alerts(status="firing", model=None, kind=None, limit=MOST_ALERTS)
            silences = await kept.active_silences(now)
            firing = await kept.all_firing()
        inhibitors = domain.inhibited({r.fingerprint: r.labels for r in rows}, firing, config.inhibit_rules)
        found = []
        for row in rows:
            if not all(m.matches(row.labels) for m in wanted):
                continue
            names = sorted({route_plans[path].receiver for path in routes_for(config, row.labels)})
            if by_receiver is not None and not any(by_receiver.matches({"receiver": n}) for n in names):
                continue
            silenced_by = [s.id for s in silences if s.mutes(row.labels, now)]
            inhibited_by = [inhibitors[row.fingerprint]] if row.fingerprint in inhibitors else []
            if (
                (not active and not silenced_by and not inhibited_by)
                or (not silenced and silenced_by)
                or (not inhibited and inhibited_by)
            ):
                continue
            lapse = row.updated_at + timedelta(seconds=config.resolve_timeout)
            found.append(
                formats.gettable_alert(
                    row.as_dict(), receivers=names, silenced_by=silenced_by, inhibited_by=inhibited_by, ends_at=lapse
                )
            )
        return found

    @api.get("/api/v2/silences", tags=tags, response_model=None)
    async def silences(
        _: Viewer,
        filter: Annotated[list[str] | None, Query()] = None,
    ) -> list[dict[str, Any]] | JSONResponse:
        """Every silence, expired ones too, newest first."""
        try:
            wanted = _matchers(filter or [])
        except ValueError as exc:
            return _bad(str(exc))
        now = datetime.now(UTC)
        async with sessions() as session:
            found = await SqlStore(session, platform).silences(include_expired=True, now=now)
        return [
            formats.gettable_silence(s.as_dict(now), now)
            for s in found
            if formats.silence_matches_filter(s.matchers, wanted)
        ]

    @api.get("/api/v2/silence/{silence_id}", tags=tags, response_model=None)
    async def silence(_: Viewer, silence_id: str) -> dict[str, Any] | JSONResponse:
        """One silence."""
        now = datetime.now(UTC)
        async with sessions() as session:
            found = await SqlStore(session, platform).silence(silence_id)
        if found is None:
            return _bad(f"silence {silence_id} not found", 404)
        return formats.gettable_silence(found.as_dict(now), now)

    @api.post("/api/v2/silences", tags=tags, response_model=None)
    async def post_silence(who: Operator, body: Annotated[Any, Body()]) -> dict[str, str] | JSONResponse:
        """Create a silence, or replace one (`id`): the old one ends, the new one gets a new id."""
        try:
            posted = PostableSilence.model_validate(body)
            matchers = [
                formats.from_am_matcher(m.name, m.value, is_regex=m.isRegex, is_equal=m.isEqual)
                for m in posted.matchers
            ]
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            return _bad(f"invalid silence: {problems}")
        except ValueError as exc:
            return _bad(f"invalid silence: {exc}")
        if mutes_everything([Matcher.parse(m) for m in matchers]):
            return _bad(f"invalid silence: {EMPTY_SILENCE}")
        now = datetime.now(UTC)
        starts = max(posted.startsAt, now)
        if posted.endsAt <= starts:
            return _bad("invalid silence: the end time must be after the start time (and after now)")
        record = SilenceRecord(
            id=str(uuid.uuid4()),
            matchers=matchers,
            starts_at=starts,
            ends_at=posted.endsAt,
            created_by=posted.createdBy,
            comment=posted.comment,
            created_at=now,
        )
        async with sessions() as session, session.begin():
            kept = SqlStore(session, platform)
            if posted.id:
                replaced = await kept.expire_silence(posted.id, now, who.actor)
                if replaced is None:
                    return _bad(f"silence {posted.id} not found", 404)
                await kept.audit(who.actor, "expire-silence", posted.id, now, replaced_by=record.id)
            await kept.add_silence(record)
            await kept.audit(
                who.actor,
                "silence",
                record.id,
                now,
                matchers=matchers,
                ends_at=posted.endsAt.isoformat(),
                comment=posted.comment,
                created_by=posted.createdBy,
                api="alertmanager-v2",
            )
        return {"silenceID": record.id}

    @api.delete("/api/v2/silence/{silence_id}", tags=tags, response_model=None)
    async def delete_silence(who: Operator, silence_id: str) -> JSONResponse:
        """Expire a silence now."""
        now = datetime.now(UTC)
        async with sessions() as session, session.begin():
            kept = SqlStore(session, platform)
            found = await kept.expire_silence(silence_id, now, who.actor)
            if found is None:
                return _bad(f"silence {silence_id} not found", 404)
            if found[1]:
                await kept.audit(who.actor, "expire-silence", silence_id, now, api="alertmanager-v2")
        return JSONResponse(None, status_code=200)
