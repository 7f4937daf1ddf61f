"""Alertmanager's API v2 on the alerter's port, in Alertmanager's shapes, behind the same tokens:
`amtool --alertmanager.url=http://127.0.0.1:8082`, Karma and Grafana's Alertmanager data source
read the alerts and manage the silences as if modelbus were an Alertmanager.

    GET  /api/v2/status              cluster (disabled), version, the configuration, uptime
    GET  /api/v2/receivers           the receivers' names
    GET  /api/v2/alerts              firing alerts (filter, receiver, active, silenced, inhibited)
    POST /api/v2/alerts              alerts from outside (amtool alert add): operators
    GET  /api/v2/alerts/groups       the same, by the routing tree's groups (receiver, group_by labels)
    GET  /api/v2/silences            every silence (filter)
    POST /api/v2/silences            a new silence, or a new version of one (`id`): operators
    GET  /api/v2/silence/{id}        one silence
    DELETE /api/v2/silence/{id}      expire it now: operators
    OPTIONS /api/v2/...              the path's methods, in Allow

Silences made here are the alerter's own (they mute its notifications) and are audited. Matchers
are RE2, as Alertmanager's; a bad parameter is 400 with a JSON string, as Alertmanager answers it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import AnyUrl, BaseModel, Field, TypeAdapter, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alerter import access, commands, domain, formats
from services.alerter.config import (
    ALL_LABELS,
    AlerterConfig,
    Matcher,
    plans,
    routes_for,
)
from services.alerter.handlers import Alerting, clear, fire
from services.alerter.store import SqlStore
from shared.runtime.commands import SqlCommands
from shared.runtime.httpapi import Operator, Principal, Viewer
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


LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class PostableAlert(BaseModel):
    """Alertmanager's postableAlert (what `amtool alert add` and Prometheus send)."""

    labels: dict[str, Annotated[str, Field(max_length=2000)]] = Field(min_length=1, max_length=100)
    annotations: dict[str, Annotated[str, Field(max_length=10_000)]] = Field(default_factory=dict, max_length=100)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: AnyUrl | None = None

    @field_validator("startsAt", "endsAt", "generatorURL", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:  # absent is unset; null is not a date-time nor a URI
            raise ValueError("null is not allowed: leave the field out")
        return value

    @field_validator("labels", "annotations")
    @classmethod
    def _names_and_values(cls, value: dict[str, str]) -> dict[str, str]:
        # Alertmanager's rule for label and annotation names; a NUL is no text PostgreSQL keeps
        for name, text in value.items():
            if not LABEL_NAME.fullmatch(name):
                raise ValueError(f"{name[:60]!r} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)")
            if "\x00" in text:
                raise ValueError(f"the value of {name!r} holds a NUL character")
        return value

    @field_validator("startsAt", "endsAt")
    @classmethod
    def _zero_is_unset(cls, value: datetime | None) -> datetime | None:
        return None if value is not None and value.year == 1 else value  # Go's zero time, as amtool sends it


POSTED_ALERTS = TypeAdapter(list[PostableAlert])
MOST_POSTED = 1000


class PostableSilence(BaseModel):
    """Alertmanager's postableSilence."""

    id: str | None = None
    matchers: list[AmMatcher] = Field(min_length=1, max_length=50)
    startsAt: datetime
    endsAt: datetime
    createdBy: str = Field(min_length=1, max_length=200)
    comment: str = Field(min_length=1, max_length=2000)


def _problems(errors: Sequence[Any], whole: str) -> str:
    """Validation errors as one line: `where: what; ...` (`whole` where the error is the whole)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}" for e in errors)


def _bad(message: str, status: int = 400) -> JSONResponse:
    """Alertmanager answers errors with a JSON string."""
    return JSONResponse(message, status_code=status)


def _matchers(texts: list[str]) -> list[Matcher]:
    # amtool sends `label="value"`; Alertmanager also takes `{label="value"}`.
    return [Matcher.parse(text.strip().removeprefix("{").removesuffix("}")) for text in texts]


def add_alertmanager_routes(
    api: FastAPI,
    settings: Settings,
    config: AlerterConfig,
    sessions: async_sessionmaker[AsyncSession],
    alerting: Alerting,
) -> None:
    """Answer Alertmanager's API v2 under /api/v2."""
    platform = settings.topic_prefix
    run: SqlCommands[commands.Store] = SqlCommands(sessions, lambda session: SqlStore(session, platform), None)
    started = datetime.now(UTC)
    route_plans = plans(config)
    original = config.as_alertmanager_yaml()
    tags: list[str | Enum] = ["alertmanager"]

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Alertmanager's API answers a bad parameter 400 with a JSON string; the rest keep FastAPI's 422
        if not request.url.path.startswith("/api/v2"):
            return await request_validation_exception_handler(request, exc)
        return _bad(_problems(exc.errors(), "request"))

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

    async def listed(
        who: Principal,
        active: bool,
        silenced: bool,
        inhibited: bool,
        filter: list[str] | None,
        receiver: str | None,
    ) -> list[tuple[list[str], dict[str, Any]]] | JSONResponse:
        """The firing alerts that pass the filters: each one's route paths and gettableAlert."""
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
        readable = who.workspaces()
        for row in rows:
            if not access.visible(readable, row.labels) or not all(m.matches(row.labels) for m in wanted):
                continue
            every = routes_for(config, row.labels)
            paths = every
            if by_receiver is not None:
                paths = [p for p in every if by_receiver.matches({"receiver": route_plans[p].receiver})]
                if not paths:
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
            names = sorted({route_plans[path].receiver for path in every})
            gettable = formats.gettable_alert(
                row.as_dict(), receivers=names, silenced_by=silenced_by, inhibited_by=inhibited_by, ends_at=lapse
            )
            found.append((paths, gettable))
        return found

    @api.get("/api/v2/alerts", tags=tags, response_model=None)
    async def alerts(
        who: Viewer,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        unprocessed: bool = True,  # accepted; the alerter takes an alert in as it comes: none is unprocessed
        filter: Annotated[list[str] | None, Query()] = None,
        receiver: str | None = None,
    ) -> list[dict[str, Any]] | JSONResponse:
        """Firing alerts (of the workspaces you may read), as Alertmanager lists them."""
        found = await listed(who, active, silenced, inhibited, filter, receiver)
        if isinstance(found, JSONResponse):
            return found
        return [gettable for _, gettable in found]

    @api.post("/api/v2/alerts", tags=tags, response_model=None)
    async def post_alerts(who: Operator, body: Annotated[Any, Body()]) -> JSONResponse:
        """Alerts from outside (`amtool alert add`, a Prometheus): each fires, routed, grouped and
        notified as the platform's own are (an `endsAt` in the past resolves it); operators only,
        audited. Labels `model` and `severity` (info, warning, critical) are read when given."""
        try:
            posted = POSTED_ALERTS.validate_python(body)
        except ValidationError as exc:
            problems = _problems(exc.errors(include_url=False), "body")
            return _bad(f"invalid alerts: {problems}")
        if len(posted) > MOST_POSTED:
            return _bad(f"{len(posted)} alerts in one request; the limit is {MOST_POSTED}")
        operated = who.workspaces("operator")
        for alert in posted:
            if not access.visible(operated, alert.labels):
                where = alert.labels.get(access.LABEL)
                yours = ", ".join(sorted(operated or ()))
                return _bad(
                    f"{who.actor} may post alerts only of the workspaces they operate ({yours}): give the label "
                    f"workspace" + (f", not {where!r}" if where else ""),
                    403,
                )
        now = datetime.now(UTC)
        async with sessions() as session, session.begin():
            kept = SqlStore(session, platform)
            for index, alert in enumerate(posted):
                labels = dict(alert.labels)
                fingerprint = domain.fingerprint(labels)
                if alert.endsAt is not None and alert.endsAt <= now:
                    await clear(
                        kept, alerting, [fingerprint], now, f"resolved through the Alertmanager API by {who.actor}"
                    )
                    await kept.audit(
                        who.actor, "resolve-alert", fingerprint, now, subject=who.subject, api="alertmanager-v2"
                    )
                    continue
                severity = labels.get("severity", "warning")
                annotations = dict(alert.annotations)
                if alert.generatorURL is not None:
                    annotations.setdefault("generator", str(alert.generatorURL))
                raised = domain.Alert(
                    model=labels.get("model", domain.PLATFORM),
                    labels=labels,
                    annotations=annotations,
                    severity=severity if severity in ("info", "warning", "critical") else "warning",  # type: ignore[arg-type]
                    source_event_type="alertmanager-api",
                    source_event_id=f"{who.actor}:{now.isoformat()}:{index}",
                )
                await fire(kept, alerting, raised, now)
                await kept.audit(
                    who.actor, "post-alert", fingerprint, now, subject=who.subject, api="alertmanager-v2", labels=labels
                )
        return JSONResponse(None, status_code=200)

    @api.get("/api/v2/alerts/groups", tags=tags, response_model=None)
    async def alert_groups(
        who: Viewer,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        filter: Annotated[list[str] | None, Query()] = None,
        receiver: str | None = None,
    ) -> list[dict[str, Any]] | JSONResponse:
        """Firing alerts by the groups the routing tree puts them in (a route's receiver and its
        group_by labels), as Alertmanager lists them; Karma and Grafana read these."""
        found = await listed(who, active, silenced, inhibited, filter, receiver)
        if isinstance(found, JSONResponse):
            return found
        groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[dict[str, Any]]] = {}
        for paths, gettable in found:
            for path in paths:
                by = route_plans[path].group_by
                labels = gettable["labels"]
                chosen = labels if ALL_LABELS in by else {k: labels[k] for k in by if k in labels}
                groups.setdefault((path, tuple(sorted(chosen.items()))), []).append(gettable)
        return [
            {"labels": dict(key), "receiver": {"name": route_plans[path].receiver}, "alerts": members}
            for (path, key), members in sorted(groups.items())
        ]

    @api.get("/api/v2/silences", tags=tags, response_model=None)
    async def silences(
        who: Viewer,
        filter: Annotated[list[str] | None, Query()] = None,
    ) -> list[dict[str, Any]] | JSONResponse:
        """Every silence (of the workspaces you may read), expired ones too, newest first."""
        try:
            wanted = _matchers(filter or [])
        except ValueError as exc:
            return _bad(str(exc))
        now = datetime.now(UTC)
        async with sessions() as session:
            found = await SqlStore(session, platform).silences(include_expired=True, now=now)
        readable = who.workspaces()
        return [
            formats.gettable_silence(s.as_dict(now), now)
            for s in found
            if formats.silence_matches_filter(s.matchers, wanted)
            and (readable is None or access.silence_workspace(s.matchers) in readable)
        ]

    @api.get("/api/v2/silence/{silence_id}", tags=tags, response_model=None)
    async def silence(who: Viewer, silence_id: str) -> dict[str, Any] | JSONResponse:
        """One silence."""
        now = datetime.now(UTC)
        async with sessions() as session:
            found = await SqlStore(session, platform).silence(silence_id)
        if found is None:
            return _bad(f"silence {silence_id} not found", 404)
        readable = who.workspaces()
        if readable is not None and access.silence_workspace(found.matchers) not in readable:
            return _bad(f"silence {silence_id} belongs to a workspace {who.actor} may not read", 403)
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
            problems = _problems(exc.errors(include_url=False), "body")
            return _bad(f"invalid silence: {problems}")
        except ValueError as exc:
            return _bad(f"invalid silence: {exc}")
        asked = commands.CreateSilence(
            actor=who.actor,
            subject=who.subject,
            workspaces=who.workspaces("operator"),
            matchers=matchers,
            starts_at=posted.startsAt,
            ends_at=posted.endsAt,
            now=datetime.now(UTC),
            created_by=posted.createdBy,
            comment=posted.comment,
            replaces=posted.id or None,
            api="alertmanager-v2",
        )
        try:
            record = await run.run(commands.create_silence, asked)
        except commands.Refused as exc:
            return _bad(f"invalid silence: {exc}")
        except commands.NotFound as exc:
            return _bad(str(exc), 404)
        except access.Forbidden as exc:
            return _bad(str(exc), 403)
        return {"silenceID": record.id}

    @api.delete("/api/v2/silence/{silence_id}", tags=tags, response_model=None)
    async def delete_silence(who: Operator, silence_id: str) -> JSONResponse:
        """Expire a silence now."""
        asked = commands.ExpireSilence(
            actor=who.actor,
            subject=who.subject,
            workspaces=who.workspaces("operator"),
            silence_id=silence_id,
            now=datetime.now(UTC),
            api="alertmanager-v2",
        )
        try:
            await run.run(commands.expire_silence, asked)
        except commands.NotFound as exc:
            return _bad(str(exc), 404)
        except access.Forbidden as exc:
            return _bad(str(exc), 403)
        return JSONResponse(None, status_code=200)

    @api.options("/api/v2/{rest:path}", tags=tags, include_in_schema=False)
    async def options(request: Request) -> Response:
        """The methods a path of this API answers, in `Allow` (no token needed, as for any OPTIONS).
        Unlike Alertmanager, no `Access-Control-Allow-Origin: *`: browsers of other origins get no
        cross-origin access to an API that changes what is muted."""
        allowed = {"OPTIONS"}
        for route in api.routes:
            if isinstance(route, APIRoute) and route.path.startswith("/api/v2"):
                if route.path_regex.match(request.url.path):
                    allowed |= route.methods or set()
        if allowed == {"OPTIONS"}:
            return _bad(f"path {request.url.path} not found", 404)
        return Response(status_code=200, headers={"Allow": ", ".join(sorted(allowed))})
