"""The registry's HTTP API: read models, versions, lineage and audit; act on rollouts, retrains,
approvals, aliases, tags and specs. Bearer tokens with roles; every action audited.

`NAME@ref` answers come from a per-process cache that PostgreSQL keeps honest: every change to a
model's versions or aliases sends `NOTIFY modelbus_registry '<model>'` in its own transaction,
and each process LISTENs and drops that model's entries. While the listening connection is down,
the cache is bypassed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import yaml
from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import commands, domain, store
from services.registry.cache import AliasCache
from services.registry.interchange import add_interchange_routes
from services.registry.operators import add_operator_routes
from services.registry.publishing import add_publish_routes
from shared.contract.events import MAX_VERSION
from shared.contract.refs import Ref, parse_ref
from shared.contract.specparse import SpecError
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.bus import Bus
from shared.runtime.commands import SqlCommands
from shared.runtime.feast import FeatureStoreError
from shared.runtime.httpapi import (
    Admin,
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
from shared.runtime.specfile import load_spec_checked

VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION, description="A version number.")]
log = logging.getLogger(__name__)
T = TypeVar("T")
C = TypeVar("C", bound=commands.Command)


# ---------------------------------------------------------------- the cache of NAME@ref answers


class VersionQuery(BaseModel):
    """Filters of a version search (query parameters)."""

    status: domain.Status | None = Field(default=None, description="Only versions with this status.")
    alias: str | None = Field(default=None, description="Only the version this alias names.")
    tag: str | None = Field(default=None, description="KEY or KEY=VALUE.")
    metric: str | None = Field(default=None, description="e.g. accuracy>=0.8")
    limit: int = Field(default=100, ge=1, le=1000, description="Most versions returned.")
    offset: int = Field(default=0, ge=0, description="Versions skipped (newest first).")


class Reason(BaseModel):
    """Why an operator acts; kept in the audit log."""

    reason: str = Field(default="", max_length=2000, description="Why.")


class RolloutRequest(Reason):
    """A rollout command."""

    version: int | None = Field(default=None, ge=1, le=MAX_VERSION, description="Version (required to start).")


class RetrainRequest(Reason):
    """A retrain request."""

    dataset_version: str | None = Field(default=None, description="Dataset version; latest if absent.")


class AliasRequest(Reason):
    """Point an alias at a version."""

    version: int = Field(ge=1, le=MAX_VERSION, description="Version the alias names.")


class TagRequest(Reason):
    """Set a tag."""

    value: str = Field(max_length=1000, description="Tag value.")


class SpecRequest(BaseModel):
    """A spec to apply, as YAML text."""

    spec_yaml: str = Field(max_length=1_000_000, description="The spec, as YAML (or JSON).")
    reason: str = Field(default="", max_length=2000, description="Why.")


class Applied(BaseModel):
    """Result of applying a spec."""

    model: str
    revision: int
    sha256: str
    changed: bool = Field(description="False when the spec equals the revision in force (nothing published).")


class Done(BaseModel):
    """Result of an action."""

    action: str
    target: str
    event_id: str | None = Field(default=None, description="ce_id of the event emitted, if any.")
    detail: dict[str, Any] = Field(default_factory=dict)


class History(BaseModel):
    """A model's rollout transitions and other lifecycle events."""

    rollouts: list[domain.RolloutStep]
    events: list[domain.HistoryItem]


# ---------------------------------------------------------------- the app


def _spec_target(spec_yaml: str) -> str:
    # The audit target of a spec, even one too broken to validate.
    with contextlib.suppress(Exception):
        data = yaml.safe_load(spec_yaml)
        name = data.get("model") if isinstance(data, dict) else None
        if isinstance(name, str):
            return name[:128]
    return "(unnamed spec)"


def make_api(
    settings: Settings,
    *,
    sessions: async_sessionmaker[AsyncSession],
    bus: Bus,
    cache: AliasCache,
    metrics: CollectorRegistry,
    artifacts: ArtifactStore,
) -> FastAPI:
    """The registry's FastAPI application."""
    api = FastAPI(
        title="modelbus registry",
        version="1",
        description="Models, versions, aliases, lineage and audit; operator actions emit events.",
    )
    api.state.identify = identifier(settings)
    api.add_middleware(BodyLimit, limit=settings.api_max_body_bytes, uploads={"/import": settings.import_max_bytes})
    add_error_handlers(api)
    api.add_middleware(HttpMetrics, registry=metrics)
    tracer = trace.get_tracer("modelbus.registry.api")

    @api.exception_handler(domain.NotFound)
    async def _not_found(_: Request, exc: domain.NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @api.exception_handler(domain.RegistryRefusal)
    async def _refused(_: Request, exc: domain.RegistryRefusal) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @api.exception_handler(FeatureStoreError)
    async def _no_feature_store(_: Request, exc: FeatureStoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @api.exception_handler(SpecError)
    async def _bad_spec(_: Request, exc: SpecError) -> JSONResponse:
        issues = [{"path": i.path, "line": i.line, "message": i.message} for i in exc.issues]
        return JSONResponse({"detail": "invalid spec", "errors": issues}, status_code=422)

    def ref_of(name: str, ref: str) -> Ref:
        try:
            return parse_ref(f"{name}@{ref}")
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    run_commands: SqlCommands[commands.Store] = SqlCommands(sessions, store.SqlStore, bus)

    async def act(handler: Callable[[C, Any], Awaitable[T]], command: C) -> T:
        """Carry out an operator's command (audited by its handler), in a span naming who and what."""
        with tracer.start_as_current_span(
            f"registry {command.action}",
            attributes={"modelbus.actor": command.who.actor, "modelbus.target": command.target},
        ):
            result = await run_commands.run(handler, command)
        if command.model is not None:
            cache.invalidate(command.model)
        return result

    def actor(who: Principal) -> commands.Actor:
        return commands.Actor(actor=who.actor, role=who.role)

    # ------------------------------------------------------------ health

    add_health_routes(api, sessions, bus, metrics)
    add_interchange_routes(api, settings, sessions=sessions, bus=bus, cache=cache, artifacts=artifacts)
    add_publish_routes(api, sessions=sessions, bus=bus)
    add_operator_routes(api, settings, sessions=sessions)

    # ------------------------------------------------------------ read (viewer)

    @api.get("/v1/models", tags=["read"])
    async def list_models(_: Viewer, q: str | None = None) -> list[domain.ModelSummary]:
        """Every model (optionally those whose name contains `q`) with aliases and version counts."""
        async with sessions() as session:
            return await store.SqlStore(session).list_models(name_contains=q)

    @api.get("/v1/models/{name}", tags=["read"])
    async def get_model(_: Viewer, name: str) -> domain.ModelSummary:
        """One model."""
        async with sessions() as session:
            return await store.SqlStore(session).get_model(name)

    async def search(model: str | None, query: VersionQuery) -> list[domain.ModelVersion]:
        try:
            metric_filter = domain.parse_metric_filter(query.metric) if query.metric else None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        tag_filter = None
        if query.tag:
            key, sep, value = query.tag.partition("=")
            tag_filter = (key, value if sep else None)
        async with sessions() as session:
            return await store.SqlStore(session).list_versions(
                model=model,
                status=query.status,
                alias=query.alias,
                tag=tag_filter,
                metric=metric_filter,
                limit=query.limit,
                offset=query.offset,
            )

    @api.get("/v1/versions", tags=["read"])
    async def search_versions(
        _: Viewer, query: Annotated[VersionQuery, Query()], model: str | None = None
    ) -> list[domain.ModelVersion]:
        """Search versions across models by alias, status, tag and metric."""
        return await search(model, query)

    @api.get("/v1/models/{name}/versions", tags=["read"])
    async def list_versions(_: Viewer, name: str, query: Annotated[VersionQuery, Query()]) -> list[domain.ModelVersion]:
        """A model's versions, newest first, filtered."""
        return await search(name, query)

    @api.get("/v1/models/{name}/versions/{ref}", tags=["read"], response_model=domain.ModelVersion)
    async def get_version(_: Viewer, name: str, ref: str) -> Response:
        """A version by number or alias (`NAME@3`, `NAME@champion`)."""
        answer = cache.get(name, ref)
        if answer is None:
            parsed = ref_of(name, ref)
            generation = cache.generation(name)
            async with sessions() as session:
                found = await store.SqlStore(session).get_version(name, await store.SqlStore(session).resolve(parsed))
            answer = found.model_dump_json().encode()
            cache.put(name, ref, generation, answer)
        return Response(answer, media_type="application/json")

    @api.get("/v1/models/{name}/versions/{ref}/lineage", tags=["read"])
    async def get_lineage(_: Viewer, name: str, ref: str) -> domain.Lineage:
        """Dataset version → training run → version → evaluations → rollouts → drift and alerts."""
        async with sessions() as session:
            return await store.SqlStore(session).lineage(name, await store.SqlStore(session).resolve(ref_of(name, ref)))

    @api.get("/v1/models/{name}/history", tags=["read"])
    async def get_history(_: Viewer, name: str, kind: str | None = None, limit: Limit = 200) -> History:
        """Rollout transitions and drift, performance, alert and command events, newest first."""
        async with sessions() as session:
            rollouts, events = await store.SqlStore(session).model_history(name, kind=kind, limit=limit)
        return History(rollouts=rollouts, events=events)

    @api.get("/v1/models/{name}/spec", tags=["read"])
    async def get_spec(_: Viewer, name: str) -> domain.SpecRevision:
        """The spec revision in force."""
        async with sessions() as session:
            return await store.SqlStore(session).latest_spec(name)

    @api.get("/v1/models/{name}/spec/revisions", tags=["read"])
    async def get_spec_revisions(_: Viewer, name: str) -> list[domain.SpecRevision]:
        """Every applied revision, newest first."""
        async with sessions() as session:
            return await store.SqlStore(session).spec_revisions(name)

    @api.get("/v1/datasets", tags=["read"])
    async def list_datasets(_: Viewer, name: str | None = None, limit: Limit = 100) -> list[domain.DatasetVersion]:
        """Dataset versions, newest first."""
        async with sessions() as session:
            return await store.SqlStore(session).list_datasets(name=name, limit=limit)

    @api.get("/v1/datasets/{name}/{version}", tags=["read"])
    async def get_dataset(_: Viewer, name: str, version: str) -> domain.DatasetVersion:
        """One dataset version."""
        async with sessions() as session:
            return await store.SqlStore(session).get_dataset(name, version)

    @api.get("/v1/audit", tags=["read"])
    async def get_audit(
        _: Viewer,
        target: Annotated[str | None, Query(description="A model (and its versions) or model@version.")] = None,
        actor: str | None = None,
        action: str | None = None,
        limit: Limit = 100,
    ) -> list[domain.AuditEntry]:
        """Who did what, newest first."""
        async with sessions() as session:
            return await store.SqlStore(session).audit_log(target=target, actor=actor, action=action, limit=limit)

    # ------------------------------------------------------------ act (operator)

    @api.post("/v1/models/{name}/versions/{version}/approve", tags=["act"])
    async def approve(who: Operator, name: str, version: VersionPath, body: Reason) -> Done:
        """Approve a version held for review; the deployer starts its rollout."""
        command = commands.Approve(who=actor(who), reason=body.reason, name=name, version=version)
        event_id = await act(commands.approve, command)
        return Done(action=command.action, target=command.target, event_id=event_id)

    @api.post("/v1/models/{name}/versions/{version}/reject", tags=["act"])
    async def reject(who: Operator, name: str, version: VersionPath, body: Reason) -> Done:
        """Reject a version that is not serving."""
        command = commands.Reject(who=actor(who), reason=body.reason, name=name, version=version)
        await act(commands.reject, command)
        return Done(action=command.action, target=command.target)

    @api.post("/v1/models/{name}/rollout/{command}", tags=["act"])
    async def rollout(
        who: Operator,
        name: str,
        command: Literal["start", "promote", "pause", "resume", "rollback"],
        body: RolloutRequest,
    ) -> Done:
        """Command the model's rollout; the deployer carries it out (or refuses it, with a reason)."""
        asked = commands.CommandRollout(
            who=actor(who), reason=body.reason, name=name, command=command, version=body.version
        )
        event_id = await act(commands.rollout, asked)
        return Done(action=asked.action, target=asked.target, event_id=event_id, detail=asked.detail())

    @api.post("/v1/models/{name}/retrain", tags=["act"])
    async def retrain(who: Operator, name: str, body: RetrainRequest) -> Done:
        """Ask the trainer to train the model again (on the latest dataset version unless one is named)."""
        command = commands.Retrain(who=actor(who), reason=body.reason, name=name, dataset_version=body.dataset_version)
        event_id = await act(commands.retrain, command)
        return Done(action=command.action, target=command.target, event_id=event_id, detail=command.detail())

    @api.put("/v1/models/{name}/aliases/{alias}", tags=["act"])
    async def put_alias(who: Operator, name: str, alias: str, body: AliasRequest) -> Done:
        """Point an alias of your own at a version (`champion` and `challenger` move with rollouts)."""
        command = commands.SetAlias(who=actor(who), reason=body.reason, name=name, alias=alias, version=body.version)
        await act(commands.set_alias, command)
        return Done(action=command.action, target=command.target, detail=command.detail())

    @api.delete("/v1/models/{name}/aliases/{alias}", tags=["act"])
    async def delete_alias(who: Operator, name: str, alias: str, reason: str = "") -> Done:
        """Remove an alias of your own."""
        command = commands.DropAlias(who=actor(who), reason=reason, name=name, alias=alias)
        await act(commands.drop_alias, command)
        return Done(action=command.action, target=command.target)

    @api.put("/v1/models/{name}/versions/{version}/tags/{key}", tags=["act"])
    async def put_tag(who: Operator, name: str, version: VersionPath, key: str, body: TagRequest) -> Done:
        """Set a tag on a version."""
        command = commands.SetTag(
            who=actor(who), reason=body.reason, name=name, version=version, key=key, value=body.value
        )
        await act(commands.set_tag, command)
        return Done(action=command.action, target=command.target, detail=command.detail())

    @api.delete("/v1/models/{name}/versions/{version}/tags/{key}", tags=["act"])
    async def delete_tag(who: Operator, name: str, version: VersionPath, key: str, reason: str = "") -> Done:
        """Remove a tag from a version."""
        command = commands.DropTag(who=actor(who), reason=reason, name=name, version=version, key=key)
        await act(commands.drop_tag, command)
        return Done(action=command.action, target=command.target, detail=command.detail())

    # ------------------------------------------------------------ admin

    @api.post("/v1/specs", tags=["admin"])
    async def apply_spec(who: Admin, body: SpecRequest) -> Applied:
        """Validate and apply a model spec; a changed spec becomes a new revision and is published."""
        command = commands.ApplySpec(
            who=actor(who),
            reason=body.reason,
            spec_yaml=body.spec_yaml,
            named=_spec_target(body.spec_yaml),
            check=lambda text: load_spec_checked(text, settings.feast_repo),
        )
        applied = await act(commands.apply_spec, command)
        return Applied(model=applied.model, revision=applied.revision, sha256=applied.sha256, changed=applied.changed)

    return api
