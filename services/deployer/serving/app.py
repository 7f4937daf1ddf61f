"""Serving: `python -m services.deployer.serving`, the deployer's second entrypoint, scaled separately.

It answers `POST /v1/models/{name}:predict` from the versions the current rollout routes to,
sticky by the spec's key, and follows `RolloutChanged` on the bus: each event's split is applied,
its new versions downloaded, digest-checked and loaded first, then the routing table is replaced
in one step, so a request in flight finishes on what it started with and none fails. The
deployer's tables are re-read at start, on reconnecting and every `MODELBUS_SERVING_REFRESH_SECONDS`
as a safety net.

Concurrent requests for one version are predicted together (micro-batching, services.deployer.
serving.batcher). Every prediction goes to a bounded buffer that a background task publishes as
`PredictionsLogged` (services.deployer.serving.predlog). The scorer scores the models' input
topics into their output topics the same way, in Kafka transactions (services.deployer.serving.stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.deployer import domain
from services.deployer.serving import v2
from services.deployer.serving.front import PredictFront, dispatch, json_response
from services.deployer.serving.metrics import Metrics
from services.deployer.serving.predictor import Answer, Predictor, Refused, Target
from services.deployer.serving.predlog import PredictionLog
from services.deployer.serving.routing import Host, NotServed, OverBudget
from services.deployer.serving.stream import Scorer
from shared.contract.events import RolloutChanged
from shared.runtime import feast
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.settings import Settings
from shared.runtime.tasks import cancel_and_wait
from shared.runtime.telemetry import code_version, make_tracer_provider

log = logging.getLogger("modelbus.serving")


@dataclass
class Serving:
    """One serving process: the host, the prediction log, the watcher and the HTTP app."""

    settings: Settings
    engine: AsyncEngine
    host: Host
    bus: Bus
    predictions: PredictionLog
    metrics: Metrics
    predictor: Predictor = field(init=False)
    scorer: Scorer | None = field(init=False)
    fastapi: FastAPI = field(init=False)
    api: PredictFront = field(init=False)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.predictor = Predictor(self.settings, self.host, self.metrics, self.predictions)
        self.scorer = Scorer(self.settings, self.predictor, self.metrics) if self.settings.serving_streams else None
        self.fastapi = make_api(self)
        self.api = PredictFront(self.predictor, self.fastapi)
        self.bus.follow(RolloutChanged, self._rollout_changed)

    async def start(self) -> None:
        """Load what is live (retrying until the database answers), then follow rollouts and log predictions."""
        self.tasks.append(asyncio.create_task(self._connect_bus(), name="serving-bus"))
        self.tasks.append(asyncio.create_task(self._refresh_forever(), name="serving-refresh"))
        self.tasks.append(asyncio.create_task(self.predictions.run(), name="serving-log"))
        if self.scorer is not None:
            self.tasks.append(asyncio.create_task(self.scorer.run(), name="serving-scorer"))
        with contextlib.suppress(Exception):
            await self.host.refresh()

    async def stop(self) -> None:
        """Flush what can be flushed, stop the tasks, close everything."""
        if self.bus.running and self.predictions.buffer:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.predictions.publish_some(), timeout=5)
        for task in self.tasks:
            await cancel_and_wait(task)
        if self.scorer is not None:
            await self.scorer.close()
        with contextlib.suppress(Exception):
            await self.bus.stop()
        await self.engine.dispose()
        self.host.close()

    async def _connect_bus(self) -> None:
        while not self.bus.running:
            try:
                await self.bus.start()
            except Exception as exc:
                log.warning("broker unavailable (%s); predictions are buffered meanwhile", exc)
                await asyncio.sleep(2)
        # What changed before the bus followed the rollouts is in the deployer's tables.
        with contextlib.suppress(Exception):
            await self.host.refresh()

    async def _rollout_changed(self, event: RolloutChanged) -> None:
        try:
            await self.host.apply(event)
        except Exception as exc:
            log.warning("%s: could not apply %s (%s); the next refresh will", event.model, event.rollout_id, exc)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.serving_refresh_seconds if self.host.refreshed else 1.0)
            try:
                await self.host.refresh()
            except Exception as exc:
                log.warning("refresh failed (%s); serving what was loaded", exc)


def make_api(serving: Serving) -> FastAPI:
    """Serving's HTTP API."""
    host, metrics = serving.host, serving.metrics
    api = FastAPI(
        title="modelbus serving",
        version="1",
        description="Predictions from the versions each model's rollout routes to.",
        redirect_slashes=False,  # `GET /v2/` is not `/v2` (the protocol names its paths exactly)
    )

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # The Open Inference Protocol's paths answer every error as {"error": "..."}
        key = "error" if request.url.path.startswith("/v2") else "detail"
        message = f"{exc.detail}: {request.method} {request.url.path[:200]}"
        return json_response({key: message}, exc.status_code, dict(exc.headers or {}))

    @api.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["ops"])
    async def readyz() -> Response:
        """Ready when every model's routing is loaded; `degraded` lists versions that failed to load."""
        problems = sorted(host.problems.values())
        if host.ready:
            status = "degraded" if problems else "ready"
            return json_response({"status": status, "models": sorted(host.live), "problems": problems})
        return json_response(
            {"status": "not ready", "problems": problems or ["the rollouts have not been read yet"]}, 503
        )

    @api.get("/metrics", tags=["ops"])
    async def prometheus() -> Response:
        """Prometheus metrics."""
        metrics.buffered.set(len(serving.predictions.buffer))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/v1/models", tags=["predict"])
    async def models() -> dict[str, list[str]]:
        """The models served here."""
        return {"models": sorted(host.live)}

    @api.get("/v1/models/{name}", tags=["predict"])
    async def describe(name: str) -> Response:
        """What is live for a model: the rollout, its split, and each loaded version."""
        live = host.live.get(name)
        if live is None:
            return json_response(
                {"detail": f"no model named {name!r} is served here (served: {sorted(host.live)})"}, 404
            )
        rollout = live.rollout
        return json_response(
            {
                "model": name,
                "rollout_id": rollout.rollout_id,
                "state": rollout.state,
                "traffic": [s.model_dump() for s in domain.traffic(rollout)],
                "sticky_key": live.sticky_key,
                "excluded_segments": {k: sorted(v) for k, v in live.excluded.items()},
                "versions": [
                    {
                        "version": v,
                        "runtime": e.loaded.runtime,
                        "task": e.loaded.task,
                        "classes": e.loaded.classes,
                        "features": [{"name": f.name, "kind": f.kind} for f in e.loaded.features],
                        "memory_bytes": e.loaded.memory_bytes,
                        "sha256": e.loaded.digest,
                    }
                    for v, e in sorted(live.engines.items())
                ],
            }
        )

    async def fast(protocol: str, name: str, version: str | None, request: Request) -> Response:
        # The running server answers these routes in `PredictFront`, without the framework's
        # per-request machinery; these handlers do the same, and document them.
        headers = {k: v for k, v in request.headers.items() if k in ("x-request-id", "content-type", v2.HEADER)}
        answer = await dispatch(serving.predictor, protocol, (name, version), await request.body(), headers)
        return _response(answer)

    @api.post("/v1/models/{name}:predict", tags=["predict"])
    async def predict(name: str, request: Request) -> Response:
        """Predict one row (`{"instance": {...}}`) or a batch (`{"instances": [{...}, ...]}`).

        Rows are routed one by one (sticky key, excluded segments) and checked against the
        answering version's feature schema: 422 lists every bad field. `X-Request-Id` is used as
        the request id when given.
        """
        return await fast("v1", name, None, request)

    @api.post("/v1/models/{name}/invocations", tags=["mlflow"])
    async def invocations_of(name: str, request: Request) -> Response:
        """MLflow's scoring protocol for a model: `dataframe_split`, `dataframe_records`, `instances`
        or `inputs` as JSON, or `text/csv`; answers `{"predictions": [...]}`."""
        return await fast("mlflow", name, None, request)

    @api.post("/invocations", tags=["mlflow"])
    async def invocations(request: Request) -> Response:
        """MLflow's scoring protocol for the model this process serves (or MODELBUS_SERVING_DEFAULT_MODEL)."""
        return await fast("mlflow", "", None, request)

    @api.get("/ping", tags=["mlflow"])
    @api.get("/health", tags=["mlflow"])
    async def ping() -> Response:
        """MLflow's health check: 200 once the rollouts were read."""
        return Response("\n", status_code=200 if host.ready else 503, media_type="application/json")

    @api.get("/version", tags=["mlflow"])
    async def version() -> Response:
        """MLflow's `/version`: the version of the server (here, modelbus'), as `mlflow models serve` answers it."""
        return Response(code_version(), status_code=200, media_type="application/json")

    add_v2_routes(api, serving, fast)
    return api


def _response(answer: Answer) -> Response:
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type, headers=answer.headers)


def add_v2_routes(api: FastAPI, serving: Serving, fast: Callable[..., Awaitable[Response]]) -> None:
    """The Open Inference Protocol (V2): health, server and model metadata, readiness, inference."""
    host, predictor = serving.host, serving.predictor

    @api.get("/v2/health/live", tags=["v2"])
    async def live() -> dict[str, bool]:
        """The process is up."""
        return {"live": True}

    @api.get("/v2/health/ready", tags=["v2"])
    async def ready() -> Response:
        """Ready once the rollouts were read and the versions they route to are loaded."""
        return json_response({"ready": host.ready}, 200 if host.ready else 503)

    @api.get("/v2", tags=["v2"])
    async def server() -> dict[str, Any]:
        """Server metadata."""
        return v2.server_metadata()

    async def described(name: str, version: str | None) -> Response:
        try:
            if version is None:
                target = await predictor.target(name)
            else:
                engine = await host.engine(name, v2.pinned_version(version) or 0)
                target = Target(name, host.live.get(name), engine)
        except OverBudget as exc:
            return _response(v2.error(503, str(exc)))
        except NotServed as exc:
            return _response(v2.error(404, str(exc)))
        except Refused as refused:
            return _response(v2.error(refused.status, str(refused)))
        versions = sorted({v for m, v in host.engines if m == name})
        return json_response(v2.metadata(target, versions))

    async def readiness(name: str, version: str | None) -> Response:
        if version is None:
            if name in host.live:
                return json_response({"name": name, "ready": True})
            if not host.serves(name):
                return _response(v2.error(404, host.why_not(name)))
            return _response(v2.error(404, f"no model named {name!r} is served here (served: {sorted(host.live)})"))
        if not (version.isascii() and version.isdigit()):
            return _response(v2.error(404, f"no version {version[:20]!r}: a version is a positive integer"))
        if (name, int(version)) in host.engines:
            return json_response({"name": name, "version": version, "ready": True})
        # Not ready is a 4xx in the protocol (as Triton answers it); a request naming it loads it.
        return _response(v2.error(400, f"{name}@{version} is not loaded here; a request naming it loads it"))

    @api.get("/v2/models/{name}", tags=["v2"])
    async def model_metadata(name: str) -> Response:
        """A model's metadata: inputs (name, datatype, shape) from its feature schema, and outputs."""
        return await described(name, None)

    @api.get("/v2/models/{name}/versions/{version}", tags=["v2"])
    async def version_metadata(name: str, version: str) -> Response:
        """A version's metadata (loading it if it is not resident)."""
        return await described(name, version)

    @api.get("/v2/models/{name}/ready", tags=["v2"])
    async def model_ready(name: str) -> Response:
        """200 when the model's routing is live here."""
        return await readiness(name, None)

    @api.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"])
    async def version_ready(name: str, version: str) -> Response:
        """200 when the version is resident here."""
        return await readiness(name, version)

    @api.post("/v2/models/{name}/infer", tags=["v2"])
    async def infer(name: str, request: Request) -> Response:
        """Inference through the model's rollout (routing, stickiness, shadow, micro-batching, prediction log)."""
        return await fast("v2", name, None, request)

    @api.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"])
    async def infer_version(name: str, version: str, request: Request) -> Response:
        """Inference by one named version, bypassing the rollout (counted in modelbus_serving_pinned_requests)."""
        return await fast("v2", name, version, request)


def build(settings: Settings) -> Serving:
    """The composition root of a serving process."""
    feast.configure(settings)
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    metrics = Metrics(CollectorRegistry())
    metrics.budget.set(settings.serving_memory_bytes)
    host = Host(settings, sessions, ArtifactStore(settings), metrics)
    tracing = make_tracer_provider(settings)
    bus = Bus(settings, tracer_provider=tracing)
    predictions = PredictionLog(
        bus,
        metrics,
        capacity=settings.prediction_log_capacity,
        batch=settings.prediction_log_batch,
        flush_seconds=settings.prediction_log_flush_seconds,
    )
    return Serving(settings=settings, engine=engine, host=host, bus=bus, predictions=predictions, metrics=metrics)
