"""The alerter's HTTP API: alerts, acknowledgements, silences and the notification log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alerter import access, commands, domain
from services.alerter.amapi import add_alertmanager_routes
from services.alerter.config import AlerterConfig, Matcher, seconds
from services.alerter.handlers import Alerting
from services.alerter.store import SqlStore
from shared.runtime.bus import Bus
from shared.runtime.commands import SqlCommands
from shared.runtime.httpapi import (
    BodyLimit,
    HttpMetrics,
    Limit,
    Operator,
    Principal,
    Viewer,
    add_error_handlers,
    add_health_routes,
    identifier,
)
from shared.runtime.settings import Settings


class Ack(BaseModel):
    """An acknowledgement."""

    comment: str = Field(default="", max_length=2000, description="What is being done about it.")


class NewSilence(BaseModel):
    """A silence to create: matchers, and either an end or a duration."""

    matchers: list[str] = Field(
        min_length=1, max_length=50, description='e.g. ["model=\\"churn\\"", "kind=~\\"drift\\""]'
    )
    starts_at: datetime | None = Field(default=None, description="Start (UTC); now if absent.")
    ends_at: datetime | None = Field(default=None, description="End (UTC).")
    duration: str | float | None = Field(default=None, description="Length instead of an end: 2h, 30m, seconds.")
    comment: str = Field(min_length=1, max_length=2000, description="Why.")

    @field_validator("matchers")
    @classmethod
    def _parse(cls, value: list[str]) -> list[str]:
        return [str(Matcher.parse(m)) for m in value]


def everywhere(who: Principal) -> None:
    """Forbidden unless the caller has a role in every workspace (what spans all of them)."""
    if who.workspaces() is not None:
        raise access.Forbidden(f"{who.actor} has roles in some workspaces only; this spans every workspace")


def make_api(
    settings: Settings,
    config: AlerterConfig,
    sessions: async_sessionmaker[AsyncSession],
    bus: Bus,
    metrics: CollectorRegistry,
    alerting: Alerting,
) -> FastAPI:
    """The alerter's FastAPI application: alerts, acknowledgements, silences, notifications."""
    api = FastAPI(title="modelbus alerter", version="1", description="Alerts, silences and the notification log.")
    api.state.identify = identifier(settings, sessions)
    api.add_middleware(BodyLimit, limit=settings.api_max_body_bytes)
    add_error_handlers(api)
    api.add_middleware(HttpMetrics, registry=metrics)
    platform = settings.topic_prefix
    run: SqlCommands[commands.Store] = SqlCommands(sessions, lambda session: SqlStore(session, platform), bus)

    add_health_routes(api, sessions, bus, metrics)

    @api.exception_handler(access.Forbidden)
    async def _forbidden(_: Request, exc: access.Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @api.get("/v1/alerts", tags=["read"])
    async def list_alerts(
        who: Viewer,
        status: Annotated[Literal["firing", "resolved"] | None, Query()] = None,
        model: str | None = None,
        kind: str | None = None,
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        """Alerts (of the workspaces you may read), most recently raised first."""
        async with sessions() as session:
            kept = SqlStore(session, platform)
            rows = await kept.alerts(status=status, model=model, kind=kind, limit=limit)
            rows = [r for r in rows if access.visible(who.workspaces(), r.labels)]
            now = datetime.now(UTC)
            silences = await kept.active_silences(now)
            firing = await kept.all_firing()
        targets = {r.fingerprint: r.labels for r in rows if r.status == "firing"}
        inhibited = domain.inhibited(targets, firing, config.inhibit_rules)
        found = []
        for row in rows:
            item = row.as_dict()
            item["silenced_by"] = [s.id for s in silences if row.status == "firing" and s.mutes(row.labels, now)]
            item["inhibited_by"] = inhibited.get(row.fingerprint)
            found.append(item)
        return found

    @api.get("/v1/alerts/{fingerprint}", tags=["read"])
    async def show_alert(who: Viewer, fingerprint: str) -> dict[str, Any]:
        """One alert, with the notifications that carried it."""
        async with sessions() as session:
            kept = SqlStore(session, platform)
            found = await kept.alert(fingerprint)
            if found is None:
                raise HTTPException(404, f"no alert has the fingerprint {fingerprint!r}")
            access.check_alert(who.workspaces(), found.labels, who.actor)
            sent = await kept.notifications_of(fingerprint)
        return {**found.as_dict(), "notifications": [n.as_dict() for n in sent]}

    @api.post("/v1/alerts/{fingerprint}/ack", tags=["act"])
    async def ack(who: Operator, fingerprint: str, body: Annotated[Ack | None, Body()] = None) -> dict[str, Any]:
        """Acknowledge an alert: someone is on it (it keeps notifying; silence it to mute it)."""
        asked = commands.Acknowledge(
            actor=who.actor,
            subject=who.subject,
            workspaces=who.workspaces("operator"),
            fingerprint=fingerprint,
            now=datetime.now(UTC),
            comment=body.comment if body else "",
        )
        try:
            return (await run.run(commands.acknowledge, asked)).as_dict()
        except commands.NotFound as exc:
            raise HTTPException(404, str(exc)) from None

    @api.get("/v1/silences", tags=["read"])
    async def list_silences(who: Viewer, expired: bool = False) -> list[dict[str, Any]]:
        """Silences (of the workspaces you may read) in force or to come (and ended ones with
        expired=true), newest first."""
        now = datetime.now(UTC)
        readable = who.workspaces()
        async with sessions() as session:
            found = await SqlStore(session, platform).silences(include_expired=expired, now=now)
            return [
                s.as_dict(now) for s in found if readable is None or access.silence_workspace(s.matchers) in readable
            ]

    @api.post("/v1/silences", tags=["act"], status_code=201)
    async def create_silence(who: Operator, body: NewSilence) -> dict[str, Any]:
        """Mute the alerts matching every matcher, from start to end."""
        now = datetime.now(UTC)
        if body.ends_at is not None:
            ends = body.ends_at
        elif body.duration is not None:
            try:
                ends = (body.starts_at or now) + timedelta(seconds=seconds(body.duration))
            except ValueError as exc:
                raise HTTPException(422, f"duration: {exc}") from None
        else:
            raise HTTPException(422, "give ends_at or duration")
        asked = commands.CreateSilence(
            actor=who.actor,
            subject=who.subject,
            workspaces=who.workspaces("operator"),
            matchers=body.matchers,
            starts_at=body.starts_at,
            ends_at=ends,
            now=now,
            comment=body.comment,
        )
        try:
            return (await run.run(commands.create_silence, asked)).as_dict(now)
        except commands.Refused as exc:
            raise HTTPException(422, str(exc)) from None

    @api.delete("/v1/silences/{silence_id}", tags=["act"])
    async def expire_silence(who: Operator, silence_id: str) -> dict[str, Any]:
        """End a silence now."""
        now = datetime.now(UTC)
        try:
            ended = await run.run(
                commands.expire_silence,
                commands.ExpireSilence(
                    actor=who.actor,
                    subject=who.subject,
                    workspaces=who.workspaces("operator"),
                    silence_id=silence_id,
                    now=now,
                ),
            )
        except commands.NotFound:
            raise HTTPException(404, f"no silence has the id {silence_id!r}") from None
        return ended.as_dict(now)

    @api.get("/v1/audit", tags=["read"])
    async def audit(who: Viewer, target: str | None = None, limit: Limit = 100) -> list[dict[str, Any]]:
        """Who acknowledged or silenced what (target: an alert's fingerprint or a silence's id), newest
        first; for callers with a role in every workspace."""
        everywhere(who)
        async with sessions() as session:
            return await SqlStore(session, platform).audit_log(target=target, limit=limit)

    @api.get("/v1/notifications", tags=["read"])
    async def list_notifications(
        who: Viewer, status: Annotated[Literal["pending", "sent"] | None, Query()] = None, limit: Limit = 100
    ) -> list[dict[str, Any]]:
        """The notification log, newest first; for callers with a role in every workspace."""
        everywhere(who)
        async with sessions() as session:
            return [n.as_dict() for n in await SqlStore(session, platform).notifications(status=status, limit=limit)]

    add_alertmanager_routes(api, settings, config, sessions, alerting)
    return api
