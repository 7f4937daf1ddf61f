"""The modelbus console: a web UI (`python -m shared.ops.console`, port 8087, at /ui/).

Pages: Models, Model (versions, rollout timeline, drift, live performance, latency), Version
(gates, manifest, artifacts, candidates, lineage graph), Dataset, Alerts (ack and silence),
Dead letters (replay), Trace (a lifecycle's waterfall), and search. A process of its own, like
the CLI a client of the services' APIs: it reads and acts only through them, with the viewer's
own token, so the services still never call each other. What it holds is its sessions (in
memory: the browser's cookie names a session, never the token; a restart logs everyone out).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.responses import Response

from shared.ops.console import auth, oidc
from shared.ops.console.actions import add_actions
from shared.ops.console.app import Console, add_frame
from shared.ops.console.pages import add_pages
from shared.ops.console.sources import Sources, Unavailable
from shared.runtime.httpapi import HttpMetrics
from shared.runtime.settings import Settings


def make_app(settings: Settings) -> FastAPI:
    """The console's application: pages, actions, assets, and /healthz, /readyz, /metrics."""
    sources = Sources(settings)
    provider = oidc.Provider(settings) if settings.oidc_issuer else None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await sources.close()
        if provider is not None:
            await provider.http.aclose()

    api = FastAPI(
        title="modelbus console", version="1", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    metrics = CollectorRegistry()
    api.add_middleware(GZipMiddleware, minimum_size=1024)  # pages; the assets come gzipped already
    api.add_middleware(HttpMetrics, registry=metrics)
    console = Console(settings=settings, sources=sources, sessions=auth.Sessions(sources.whoami), provider=provider)
    add_frame(api, console)
    add_pages(api, console)
    add_actions(api, console)

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Ready when the registry answers (who a token is, and most of every page, come from it)."""
        try:
            await sources.registry_up()
        except Unavailable as exc:
            return JSONResponse({"ready": False, "problems": [str(exc)]}, status_code=503)
        return JSONResponse({"ready": True, "problems": []})

    @api.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    return api
