"""The monitor's HTTP API, on its health port: each model's closed windows (drift per feature,
estimated and realised performance, latency) and the validation baselines they are held against.
What the console's drift and performance charts draw."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.monitor.records import ClosedWindow
from services.monitor.store import SqlStore
from shared.runtime.bus import Bus
from shared.runtime.httpapi import BodyLimit, HttpMetrics, Viewer, add_error_handlers, add_health_routes, identifier
from shared.runtime.settings import Settings

WindowLimit = Annotated[int, Query(ge=1, le=10_000, description="The newest this many windows.")]


def window_view(window: ClosedWindow) -> dict[str, Any]:
    """A closed window as the API shows it: its span, drift per feature, performance and latency."""
    result = window.result
    summary = result.get("summary") or {}
    return {
        "window_id": window.window_id,
        "version": window.version,
        "started_at": window.started_at.isoformat(),
        "ended_at": window.ended_at.isoformat(),
        "rows": window.rows,
        "drifted_share": window.drifted_share,
        "dataset_drift": window.dataset_drift,
        "features": [
            {k: f.get(k) for k in ("feature", "test", "score", "p_value", "threshold", "drifted")}
            for f in result.get("features", [])
        ],
        "prediction": result.get("prediction"),
        "missing": result.get("missing", []),
        "estimated": result.get("estimated") or {},
        "realised": result.get("realised"),
        "latency_p99_ms": summary.get("latency_p99_ms"),
    }


def make_api(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], bus: Bus, metrics: CollectorRegistry
) -> FastAPI:
    """The monitor's FastAPI application: health, readiness, metrics, and the window history."""
    api = FastAPI(title="modelbus monitor", version="1", description="Drift and performance history per model.")
    api.state.identify = identifier(settings, sessions)
    api.add_middleware(BodyLimit, limit=settings.api_max_body_bytes)
    add_error_handlers(api)
    api.add_middleware(HttpMetrics, registry=metrics)
    add_health_routes(api, sessions, bus, metrics)

    async def workspace_of(model: str) -> str:
        """The model's workspace, from the spec the monitor keeps (a model without one: `default`)."""
        async with sessions() as session:
            spec = await SqlStore(session).spec_of(model)
        return spec.workspace if spec is not None else "default"

    api.state.workspace_of = workspace_of  # a role in the model's workspace opens its windows

    @api.get("/v1/models/{name}/windows", tags=["read"])
    async def windows(_: Viewer, name: str, limit: WindowLimit = 500) -> dict[str, Any]:
        """A model's closed windows, oldest first (the newest `limit`), each version's
        validation metrics (`baselines`, what live performance is compared with), and the label
        join's `ledger`: where every label and answer went."""
        async with sessions() as session:
            store = SqlStore(session)
            closed = await store.closed_windows(name, limit)
            baselines: dict[str, dict[str, float]] = {}
            for version in sorted({w.version for w in closed}):
                reference = await store.reference_of(name, version)
                if reference is not None:
                    baselines[str(version)] = reference.metrics
            ledger = await store.ledger(name)
        return {
            "model": name,
            "windows": [window_view(w) for w in closed],
            "baselines": baselines,
            "ledger": ledger.as_dict(),
        }

    return api
