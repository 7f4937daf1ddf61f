"""The registry's HTTP API: the application, its error mapping, and its routers, one per resource
(services.registry.routes: models, versions, datasets, audit, specs; and the import/export,
publish and operators' routes). Bearer tokens with roles; every action audited.

`NAME@ref` answers come from a per-process cache that PostgreSQL keeps honest: every change to a
model's versions or aliases sends `NOTIFY modelbus_registry '<model>'` in its own transaction,
and each process LISTENs and drops that model's entries. While the listening connection is down,
the cache is bypassed.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import domain, routes, store
from services.registry.cache import AliasCache, Workspaces
from services.registry.interchange import add_interchange_routes
from services.registry.operators import add_operator_routes
from services.registry.publishing import add_publish_routes
from services.registry.routes import accounts, audit, datasets, models, specs, versions
from shared.contract.specparse import SpecError
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.bus import Bus
from shared.runtime.commands import SqlCommands
from shared.runtime.feast import FeatureStoreError
from shared.runtime.httpapi import (
    BodyLimit,
    HttpMetrics,
    Principal,
    add_error_handlers,
    add_health_routes,
    identifier,
)
from shared.runtime.settings import Settings

log = logging.getLogger(__name__)


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
    api.state.identify = identifier(settings, sessions)
    api.add_middleware(BodyLimit, limit=settings.api_max_body_bytes, uploads={"/import": settings.import_max_bytes})
    add_error_handlers(api)
    api.add_middleware(HttpMetrics, registry=metrics)

    @api.exception_handler(domain.NotFound)
    async def _not_found(_: Request, exc: domain.NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @api.exception_handler(domain.RegistryRefusal)
    async def _refused(_: Request, exc: domain.RegistryRefusal) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403 if isinstance(exc, domain.Forbidden) else 409)

    async def lookup(model: str) -> str | None:
        async with sessions() as session:
            return await store.SqlStore(session).workspace_of(model)

    workspaces = Workspaces(lookup)
    api.state.workspaces = workspaces
    api.state.workspace_of = workspaces.of

    async def refused(who: Principal, request: Request, model: str, reason: str) -> None:
        """A request refused for the model's workspace is audited like any refused action."""
        route = getattr(request.scope.get("route"), "path", request.url.path)
        async with sessions() as session, session.begin():
            await store.SqlStore(session).audit(
                actor=who.actor,
                subject=who.subject,
                role=who.role,
                action=f"{request.method} {route}"[:64],
                target=model,
                outcome="refused",
                detail={"error": reason},
            )

    api.state.refused = refused

    @api.exception_handler(FeatureStoreError)
    async def _no_feature_store(_: Request, exc: FeatureStoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @api.exception_handler(SpecError)
    async def _bad_spec(_: Request, exc: SpecError) -> JSONResponse:
        issues = [{"path": i.path, "line": i.line, "message": i.message} for i in exc.issues]
        return JSONResponse({"detail": "invalid spec", "errors": issues}, status_code=422)

    ctx = routes.Context(
        settings=settings,
        sessions=sessions,
        cache=cache,
        commands=SqlCommands(sessions, store.SqlStore, bus),
        tracer=trace.get_tracer("modelbus.registry.api"),
    )
    add_health_routes(api, sessions, bus, metrics)
    add_interchange_routes(api, settings, sessions=sessions, bus=bus, cache=cache, artifacts=artifacts)
    add_publish_routes(api, sessions=sessions, bus=bus)
    add_operator_routes(api, settings, sessions=sessions)
    for resource in (models, versions, datasets, audit, specs, accounts):
        resource.add_routes(api, ctx)
    return api
