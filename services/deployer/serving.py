"""Serving: `python -m services.deployer.serving`, the deployer's second entrypoint, scaled separately.

It answers `POST /v1/models/{name}:predict` from the versions the current rollout routes to,
sticky by the spec's key, and swaps versions when a `RolloutChanged` arrives: the new versions are
downloaded, digest-checked and loaded first, then the routing table is replaced in one step, so a
request in flight finishes on what it started with and none fails.

Concurrent requests for one version are predicted together (adaptive micro-batching: whatever
arrived while the model was busy forms the next batch). Every prediction goes to a bounded
buffer that a background task publishes as `PredictionsLogged`; a slow or absent broker never
delays or fails a prediction: when the buffer is full, new predictions are dropped and counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.deployer import domain, store
from services.deployer.predictor import InputError, Loaded, Row, check_rows, load
from shared.contract import topics
from shared.contract.envelope import decode
from shared.contract.events import PredictionsLogged, RolloutChanged
from shared.runtime.artifacts import ArtifactError, ArtifactStore
from shared.runtime.broker import aiokafka_options
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.modelfile import UntrustedArtifact
from shared.runtime.settings import Settings
from shared.runtime.telemetry import make_tracer_provider

log = logging.getLogger("modelbus.serving")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SLOW_CALL_SECONDS = 0.002


class Metrics:
    """Serving's Prometheus metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "modelbus_serving_predictions",
            "Rows predicted, by model, version and role.",
            ["model", "version", "role"],
            registry=registry,
        )
        self.errors = Counter(
            "modelbus_serving_errors",
            "Requests refused or failed, by model and kind.",
            ["model", "kind"],
            registry=registry,
        )
        self.latency = Histogram(
            "modelbus_serving_request_seconds",
            "Request latency, by model and answering version.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_rows = Histogram(
            "modelbus_serving_batch_rows",
            "Rows per model call (micro-batches of concurrent requests).",
            ["model", "version"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=registry,
        )
        self.shadow = Counter(
            "modelbus_serving_shadow_predictions",
            "Shadow predictions, by whether they agreed with the answer returned.",
            ["model", "version", "agreed"],
            registry=registry,
        )
        self.dropped = Counter(
            "modelbus_serving_predictions_dropped", "Predictions not logged: buffer full.", registry=registry
        )
        self.logged = Counter(
            "modelbus_serving_predictions_logged", "Predictions published as PredictionsLogged.", registry=registry
        )
        self.buffered = Gauge(
            "modelbus_serving_log_buffered", "Predictions waiting to be published.", registry=registry
        )
        self.loaded = Gauge(
            "modelbus_serving_version_memory_bytes",
            "Memory taken by loading a version (resident set growth).",
            ["model", "version", "runtime"],
            registry=registry,
        )
        self.load_failures = Counter(
            "modelbus_serving_load_failures", "Versions that could not be loaded.", ["model"], registry=registry
        )


# ---------------------------------------------------------------- micro-batching


class Batcher:
    """Predicts the rows of concurrent requests for one version together.

    Requests submitted in the same turn of the event loop, or while the model was busy, form one
    call. Cheap models run inline (no thread hop); a model whose calls take longer than
    `SLOW_CALL_SECONDS` runs in a worker thread so the loop keeps accepting requests meanwhile.
    """

    def __init__(self, loaded: Loaded, *, max_rows: int, observe: Histogram) -> None:
        self.loaded = loaded
        self.max_rows = max_rows
        self.observe = observe.labels(loaded.model, str(loaded.version))
        self.waiting: collections.deque[tuple[list[Row], asyncio.Future[tuple[list[Any], Any]]]] = collections.deque()
        self.scheduled = False
        self.busy = False
        self.call_seconds = 0.0

    def submit(self, rows: list[Row]) -> asyncio.Future[tuple[list[Any], Any]]:
        """Queue rows; the future resolves to (predictions, probabilities or None)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[list[Any], Any]] = loop.create_future()
        self.waiting.append((rows, future))
        if not self.scheduled and not self.busy:
            self.scheduled = True
            loop.call_soon(self._flush)
        return future

    def _take(self) -> list[tuple[list[Row], asyncio.Future[tuple[list[Any], Any]]]]:
        batch = [self.waiting.popleft()]
        rows = len(batch[0][0])
        while self.waiting and rows + len(self.waiting[0][0]) <= self.max_rows:
            item = self.waiting.popleft()
            rows += len(item[0])
            batch.append(item)
        return batch

    def _flush(self) -> None:
        self.scheduled = False
        if not self.waiting:
            return
        batch = self._take()
        if self.call_seconds > SLOW_CALL_SECONDS:
            self.busy = True
            asyncio.get_running_loop().create_task(self._in_thread(batch))
        else:
            self._settle(batch, self._call(batch))
            self._again()

    async def _in_thread(self, batch: list[tuple[list[Row], asyncio.Future[tuple[list[Any], Any]]]]) -> None:
        try:
            outcome = await asyncio.to_thread(self._call, batch)
            self._settle(batch, outcome)
        finally:
            self.busy = False
            self._again()

    def _again(self) -> None:
        if self.waiting and not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _call(
        self, batch: list[tuple[list[Row], asyncio.Future[tuple[list[Any], Any]]]]
    ) -> tuple[list[Any], Any] | BaseException:
        rows = [row for request, _ in batch for row in request]
        began = time.perf_counter()
        try:
            outcome = self.loaded.predict(rows)
        except Exception as exc:
            return exc
        seconds = time.perf_counter() - began
        self.call_seconds = seconds if not self.call_seconds else 0.8 * self.call_seconds + 0.2 * seconds
        self.observe.observe(len(rows))
        return outcome

    def _settle(
        self,
        batch: list[tuple[list[Row], asyncio.Future[tuple[list[Any], Any]]]],
        outcome: tuple[list[Any], Any] | BaseException,
    ) -> None:
        if isinstance(outcome, BaseException):
            if len(batch) > 1:  # find the culprit: each request on its own
                for item in batch:
                    self._settle([item], self._call([item]))
                return
            if not batch[0][1].done():
                batch[0][1].set_exception(outcome)
            return
        labels, probabilities = outcome
        start = 0
        for rows, future in batch:
            end = start + len(rows)
            if not future.done():
                future.set_result((labels[start:end], probabilities[start:end] if probabilities is not None else None))
            start = end


# ---------------------------------------------------------------- what is live


@dataclass(frozen=True)
class Engine:
    """A loaded version and its batcher."""

    loaded: Loaded
    batcher: Batcher
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Live:
    """One model's routing table: its rollout, its routing rules and the engines it routes to."""

    model: str
    rollout: domain.Rollout
    sticky_key: str | None
    excluded: dict[str, frozenset[str]]
    engines: dict[int, Engine]
    policy_key: int | None = None

    def route(self, row: Any, fallback_key: str) -> domain.Route:
        """The version that answers one row."""
        request = row if isinstance(row, dict) else {}
        return domain.route(
            self.rollout, request, sticky_key=self.sticky_key, excluded=self.excluded, fallback_key=fallback_key
        )


def needed(rollout: domain.Rollout) -> set[int]:
    """Versions a rollout routes to (or mirrors to)."""
    if rollout.state == "promoted" or rollout.stable is None:
        return {rollout.candidate}
    if rollout.state in ("rolled-back", "superseded"):
        return {rollout.stable}
    return {rollout.candidate, rollout.stable}


class Host:
    """The models this process serves, refreshed from the deployer's tables."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        artifacts: ArtifactStore,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.artifacts = artifacts
        self.metrics = metrics
        self.only = frozenset(m.strip() for m in settings.serving_models.split(",") if m.strip()) or None
        self.live: dict[str, Live] = {}
        self.engines: dict[tuple[str, int], Engine] = {}
        self.problems: dict[str, str] = {}
        self.refreshed = False
        self.folder = Path(tempfile.mkdtemp(prefix="modelbus-serving-"))
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        """The rollouts were read. A version that fails to load leaves the process ready (and listed
        in `problems`, `degraded`): the model's previous routing keeps answering, or, when it has
        none, that model alone is refused; taking the process out of service would fail every model.
        """
        return self.refreshed

    async def refresh(self, model: str | None = None) -> None:
        """Re-read the rollouts (of one model, or all) and swap in what changed, loading first."""
        async with self._lock:
            only = frozenset({model}) if model else self.only
            if model and self.only and model not in self.only:
                return
            async with self.sessions() as session:
                found = await store.SqlStore(session).live_models(only)
            loaded_any = False
            for item in found:
                loaded_any |= await self._apply(item)
            if model is None:
                self.refreshed = True
            self._drop_unused()
        if loaded_any:
            # What is loaded now lives as long as the process: keep it out of the collector's
            # full passes, which otherwise stall requests for tens of milliseconds.
            gc.unfreeze()
            gc.collect()
            gc.freeze()

    async def _apply(self, item: store.LiveModel) -> bool:
        """Swap in the model's routing if it changed; True if a version had to be loaded for it."""
        current = self.live.get(item.model)
        if current is not None and current.rollout == item.rollout and current.policy_key == _policy_key(item):
            return False
        engines: dict[int, Engine] = {}
        loaded = False
        for version in sorted(needed(item.rollout)):
            engine = self.engines.get((item.model, version))
            if engine is None:
                loaded = True
                try:
                    engine = await self._load(item, version)
                except (ArtifactError, UntrustedArtifact, OSError, ValueError, RuntimeError) as exc:
                    self.metrics.load_failures.labels(item.model).inc()
                    self.problems[item.model] = f"{item.model}@{version} cannot be loaded: {exc}"
                    log.error("%s; still serving what was live before", self.problems[item.model])
                    return loaded
            engines[version] = engine
        policy = item.spec.rollout if item.spec is not None else None
        live = Live(
            model=item.model,
            rollout=item.rollout,
            sticky_key=policy.sticky_key if policy else None,
            excluded={s.field: frozenset(map(str, s.values)) for s in policy.excluded_segments} if policy else {},
            engines=engines,
            policy_key=_policy_key(item),
        )
        self.live[item.model] = live  # the swap: one assignment
        self.problems.pop(item.model, None)
        split = ", ".join(f"v{s.version} {s.percent:g}% {s.role}" for s in domain.traffic(item.rollout))
        log.info("%s: %s (%s) now live: %s", item.model, item.rollout.rollout_id, item.rollout.state, split)
        return loaded

    async def _load(self, item: store.LiveModel, version: int) -> Engine:
        refs = item.artifacts.get(version)
        if not refs:
            raise ArtifactError(f"the deployer knows no artifacts of {item.model}@{version}")
        folder = self.folder / item.model / str(version)
        began = time.perf_counter()
        loaded = await asyncio.to_thread(load, self.artifacts, item.model, version, refs, folder)
        self.metrics.loaded.labels(item.model, str(version), loaded.runtime).set(loaded.memory_bytes)
        log.info(
            "%s@%d loaded (%s, %.1f MiB) in %.2f s",
            item.model,
            version,
            loaded.runtime,
            loaded.memory_bytes / 2**20,
            time.perf_counter() - began,
        )
        batcher = Batcher(loaded, max_rows=self.settings.serving_batch_rows, observe=self.metrics.batch_rows)
        engine = Engine(loaded, batcher, tuple(str(c) for c in loaded.classes or ()))
        self.engines[(item.model, version)] = engine
        return engine

    def _drop_unused(self) -> None:
        used = {(m, v) for m, live in self.live.items() for v in live.engines}
        for key in [k for k in self.engines if k not in used]:
            del self.engines[key]  # requests still holding it finish on it
            shutil.rmtree(self.folder / key[0] / str(key[1]), ignore_errors=True)

    def close(self) -> None:
        """Remove downloaded artifacts."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _policy_key(item: store.LiveModel) -> int | None:
    return hash(item.spec.rollout.model_dump_json()) if item.spec is not None else None


# ---------------------------------------------------------------- prediction log

# What the request path hands to the log: (live, row, answer, latency ms, served at); the
# event's columns are built by the publishing task, off the request path.
Served = tuple["Live", dict[str, Any], dict[str, Any], float, float]


@dataclass
class PredictionLog:
    """A bounded buffer of predictions, published in batches as PredictionsLogged."""

    bus: Bus
    metrics: Metrics
    capacity: int
    batch: int
    flush_seconds: float
    buffer: collections.deque[tuple[str, Served]] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, model: str, prediction: Served) -> None:
        """Buffer one prediction; never blocks; drops (and counts) it when the buffer is full."""
        if len(self.buffer) >= self.capacity:
            self.metrics.dropped.inc()
            return
        self.buffer.append((model, prediction))
        if len(self.buffer) >= self.batch:
            self.wake.set()

    async def run(self) -> None:
        """Publish until cancelled; a failed batch goes back to the front of the buffer."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.flush_seconds)
            self.wake.clear()
            self.metrics.buffered.set(len(self.buffer))
            while self.buffer:
                if not await self.publish_some():
                    await asyncio.sleep(min(5.0, self.flush_seconds * 2))
                    break

    async def publish_some(self) -> bool:
        """Publish one batch per model from the head of the buffer; False if the broker failed."""
        taken = [self.buffer.popleft() for _ in range(min(self.batch, len(self.buffer)))]
        by_model: dict[str, list[Served]] = {}
        for model, served in taken:
            by_model.setdefault(model, []).append(served)
        for index, (model, predictions) in enumerate(by_model.items()):
            event = _logged(model, predictions)
            try:
                # One span per batch (not per request: the request path stays span-free); the
                # monitor's span for the windows these rows go to links to it.
                with self.bus.tracer.start_as_current_span(
                    f"serving log {model}", attributes={"modelbus.predictions": len(predictions)}
                ):
                    await asyncio.wait_for(self.bus.publish(event), timeout=10)
            except Exception as exc:
                rest = [(m, p) for m, ps in list(by_model.items())[index:] for p in ps]
                room = self.capacity - len(self.buffer)
                self.buffer.extendleft(reversed(rest[:room]))
                if len(rest) > room:
                    self.metrics.dropped.inc(len(rest) - room)
                log.warning("could not publish %d predictions (%s); will retry", len(rest), exc)
                return False
            self.metrics.logged.inc(len(predictions))
        return True


# ---------------------------------------------------------------- HTTP


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False, default=str).encode()


@dataclass(frozen=True)
class Answer:
    """An HTTP answer of the predict route."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Predictor:
    """The predict route's work, shared by the fast ASGI front and the documented FastAPI route."""

    def __init__(self, serving: Serving) -> None:
        self.serving = serving
        self.host = serving.host
        self.metrics = serving.metrics
        self.settings = serving.settings

    def refuse(self, status: int, detail: Any, model: str, kind: str) -> Answer:
        self.metrics.errors.labels(model, kind).inc()
        return Answer(status, _dumps({"detail": detail}))

    async def answer(self, name: str, body: bytes, request_id: str | None) -> Answer:
        """Predict what the body asks for, or say precisely why not."""
        began = time.perf_counter()
        live = self.host.live.get(name)
        if live is None:
            served = sorted(self.host.live)
            return self.refuse(404, f"no model named {name!r} is served here (served: {served})", name, "unknown-model")
        limit = self.settings.serving_max_body_bytes
        if len(body) > limit:
            return self.refuse(413, f"body of {len(body)} bytes exceeds {limit}", name, "too-large")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return self.refuse(400, f"body is not JSON: {exc}", name, "bad-json")
        single = isinstance(payload, dict) and "instance" in payload and "instances" not in payload
        rows = [payload["instance"]] if single else payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(rows, list) or not rows:
            shape = 'body must be {"instance": {feature: value, ...}} or {"instances": [{...}, ...]}, with a row'
            return self.refuse(422, [shape], name, "bad-shape")
        if len(rows) > self.settings.serving_max_rows:
            return self.refuse(
                413, f"{len(rows)} rows exceed the limit of {self.settings.serving_max_rows}", name, "too-large"
            )
        request_id = request_id or uuid.uuid4().hex
        if len(request_id) > 128:
            return self.refuse(400, "x-request-id is longer than 128 characters", name, "bad-request-id")
        ids = [request_id] if single else [f"{request_id}-{i}" for i in range(len(rows))]
        routes = [live.route(row, ids[i]) for i, row in enumerate(rows)]
        groups: dict[int, list[int]] = {}
        for index, chosen in enumerate(routes):
            groups.setdefault(chosen.version, []).append(index)
        checked: dict[int, list[Row]] = {}
        errors: list[str] = []
        for version, indices in groups.items():
            features = live.engines[version].loaded.features
            if single:
                try:
                    checked[version] = check_rows(features, rows, where="instance")
                except InputError as exc:
                    errors.extend(exc.errors)
                continue
            for index in indices:
                try:
                    checked.setdefault(version, []).extend(
                        check_rows(features, [rows[index]], where=f"instances[{index}]")
                    )
                except InputError as exc:
                    errors.extend(exc.errors)
        if errors:
            return self.refuse(422, errors, name, "invalid-features")
        futures = [(v, live.engines[v].batcher.submit(checked[v])) for v in groups]
        try:
            outcomes = {v: await f for v, f in futures}
        except Exception as exc:
            log.exception("%s: prediction failed", name)
            return self.refuse(500, f"prediction failed: {type(exc).__name__}: {exc}", name, "model-error")
        answers: list[dict[str, Any]] = [{} for _ in rows]
        for version, indices in groups.items():
            labels, probabilities = outcomes[version]
            classes = live.engines[version].loaded.classes
            names = live.engines[version].class_names
            for k, index in enumerate(indices):
                answer: dict[str, Any] = {
                    "request_id": ids[index],
                    "version": version,
                    "role": routes[index].role,
                    "prediction": labels[k],
                }
                if probabilities is not None and classes is not None:
                    answer["probabilities"] = dict(zip(names, probabilities[k], strict=False))
                answers[index] = answer
        elapsed = time.perf_counter() - began
        for version, indices in groups.items():
            self.metrics.latency.labels(name, str(version)).observe(elapsed)
            self.metrics.requests.labels(name, str(version), routes[indices[0]].role).inc(len(indices))
        served_at = time.time()
        log_ = self.serving.predictions
        for index, answer in enumerate(answers):
            log_.add(name, (live, rows[index], answer, elapsed * 1000, served_at))
        mirrored = [i for i, r in enumerate(routes) if r.shadow is not None and r.shadow in live.engines]
        if mirrored:
            asyncio.get_running_loop().create_task(
                _shadow(self.serving, live, rows, mirrored, routes, answers, served_at)
            )
        headers = {"x-request-id": request_id}
        if single:
            return Answer(200, _dumps({"model": name, **answers[0]}), headers)
        return Answer(200, _dumps({"model": name, "predictions": answers}), headers)


class PredictFront:
    """The ASGI app serving runs: `POST /v1/models/{name}:predict` answered directly, the rest by FastAPI.

    The predict route is the hot path; going around the framework's routing, dependency and
    middleware layers takes a good part of the per-request cost off it.
    """

    def __init__(self, predictor: Predictor, app: FastAPI) -> None:
        self.predictor = predictor
        self.app = app
        self.limit = predictor.settings.serving_max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith("/v1/models/"):
            await self.app(scope, receive, send)
            return
        name, _, verb = path[len("/v1/models/") :].rpartition(":")
        if verb != "predict" or not name or "/" in name:
            await self.app(scope, receive, send)
            return
        request_id = None
        declared = 0
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")
            elif key == b"content-length" and value.isdigit():
                declared = int(value)
        if declared > self.limit:
            answer = self.predictor.refuse(413, f"body of {declared} bytes exceeds {self.limit}", name, "too-large")
        else:
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.limit:
                    break
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if size > self.limit:
                answer = self.predictor.refuse(413, f"body exceeds {self.limit} bytes", name, "too-large")
            else:
                answer = await self.predictor.answer(name, body, request_id)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer.body)).encode())]
        headers += [(k.encode(), v.encode("latin-1")) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


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
    fastapi: FastAPI = field(init=False)
    api: PredictFront = field(init=False)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.predictor = Predictor(self)
        self.fastapi = make_api(self)
        self.api = PredictFront(self.predictor, self.fastapi)

    async def start(self) -> None:
        """Load what is live (retrying until the database answers), then follow rollouts and log predictions."""
        self.tasks.append(asyncio.create_task(self._connect_bus(), name="serving-bus"))
        self.tasks.append(asyncio.create_task(self._watch(), name="serving-watch"))
        self.tasks.append(asyncio.create_task(self._refresh_forever(), name="serving-refresh"))
        self.tasks.append(asyncio.create_task(self.predictions.run(), name="serving-log"))
        with contextlib.suppress(Exception):
            await self.host.refresh()

    async def stop(self) -> None:
        """Flush what can be flushed, stop the tasks, close everything."""
        if self.bus.running and self.predictions.buffer:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.predictions.publish_some(), timeout=5)
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
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

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.serving_refresh_seconds if self.host.refreshed else 1.0)
            try:
                await self.host.refresh()
            except Exception as exc:
                log.warning("refresh failed (%s); serving what was loaded", exc)

    async def _watch(self) -> None:
        """Follow RolloutChanged (from the end: the database has the state) and refresh the model it names."""
        topic = self.settings.topic(topics.ROLLOUT_CHANGED)
        while True:
            consumer = AIOKafkaConsumer(
                topic, group_id=None, auto_offset_reset="latest", **aiokafka_options(self.settings)
            )
            try:
                await consumer.start()
                await self.host.refresh()  # anything that changed before the consumer was positioned
                async for record in consumer:
                    try:
                        event = decode(record.value or b"", list(record.headers)).event
                    except Exception as exc:
                        log.warning("unreadable RolloutChanged at offset %d: %s", record.offset, exc)
                        continue
                    if isinstance(event, RolloutChanged):
                        await self.host.refresh(event.model)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("rollout watch interrupted (%s); retrying", exc)
                await asyncio.sleep(2)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()


def make_api(serving: Serving) -> FastAPI:
    """Serving's HTTP API."""
    host, metrics = serving.host, serving.metrics
    api = FastAPI(
        title="modelbus serving",
        version="1",
        description="Predictions from the versions each model's rollout routes to.",
    )

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
            return _json({"status": status, "models": sorted(host.live), "problems": problems})
        return _json({"status": "not ready", "problems": problems or ["the rollouts have not been read yet"]}, 503)

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
            return _json({"detail": f"no model named {name!r} is served here (served: {sorted(host.live)})"}, 404)
        rollout = live.rollout
        return _json(
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

    @api.post("/v1/models/{name}:predict", tags=["predict"])
    async def predict(name: str, request: Request) -> Response:
        """Predict one row (`{"instance": {...}}`) or a batch (`{"instances": [{...}, ...]}`).

        Rows are routed one by one (sticky key, excluded segments) and checked against the
        answering version's feature schema: 422 lists every bad field. `X-Request-Id` is used as
        the request id when given. (The running server answers this route in `PredictFront`,
        without the framework's per-request machinery; this handler does the same.)
        """
        answer = await serving.predictor.answer(name, await request.body(), request.headers.get("x-request-id"))
        return Response(answer.body, status_code=answer.status, media_type="application/json", headers=answer.headers)

    return api


def _logged(model: str, served: list[Served]) -> PredictionsLogged:
    """The PredictionsLogged of these answers (and shadow answers), column by column.

    Built without re-validation (serving made every value); defaults are filled in. A row's
    features are those its answering version reads.
    """
    names = dict.fromkeys(
        f.name for live, _, answer, _, _ in served for f in live.engines[answer["version"]].loaded.features
    )
    classes = sorted({c for _, _, answer, _, _ in served for c in answer.get("probabilities") or ()})
    keys = [
        None if not live.sticky_key or row.get(live.sticky_key) is None else str(row[live.sticky_key])
        for live, row, _, _, _ in served
    ]
    answers = [answer for _, _, answer, _, _ in served]
    return PredictionsLogged.model_construct(
        model=model,
        batch_id=uuid.uuid4().hex,
        request_id=[a["request_id"] for a in answers],
        model_version=[a["version"] for a in answers],
        role=[a["role"] for a in answers],
        features={name: [row.get(name) for _, row, _, _, _ in served] for name in names},
        prediction=[a["prediction"] for a in answers],
        probabilities={c: [(a.get("probabilities") or {}).get(c) for a in answers] for c in classes} or None,
        latency_ms=[latency for _, _, _, latency, _ in served],
        served_at=[datetime.fromtimestamp(at, UTC) for _, _, _, _, at in served],
        sticky_key=keys if any(k is not None for k in keys) else None,
    )


async def _shadow(
    serving: Serving,
    live: Live,
    rows: list[Any],
    mirrored: list[int],
    routes: list[domain.Route],
    answers: list[dict[str, Any]],
    at: float,
) -> None:
    """Predict with the shadow version and log it; its answers are compared, never returned."""
    version = routes[mirrored[0]].shadow
    assert version is not None
    engine = live.engines[version]
    try:
        checked = check_rows(engine.loaded.features, [rows[i] for i in mirrored], where="shadow")
        labels, probabilities = await engine.batcher.submit(checked)
    except Exception as exc:
        serving.metrics.errors.labels(live.model, "shadow").inc()
        log.info("%s: shadow v%d could not predict: %s", live.model, version, exc)
        return
    classes = engine.loaded.classes
    for k, index in enumerate(mirrored):
        agreed = labels[k] == answers[index]["prediction"]
        serving.metrics.shadow.labels(live.model, str(version), str(agreed).lower()).inc()
        answer: dict[str, Any] = {
            "request_id": answers[index]["request_id"],
            "version": version,
            "role": "shadow",
            "prediction": labels[k],
        }
        if probabilities is not None and classes is not None:
            answer["probabilities"] = dict(zip(engine.class_names, probabilities[k], strict=False))
        serving.predictions.add(live.model, (live, rows[index], answer, 0.0, at))


def build(settings: Settings) -> Serving:
    """The composition root of a serving process."""
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    metrics = Metrics(CollectorRegistry())
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


if __name__ == "__main__":
    import uvloop

    from shared.runtime.runner import serve_until_stopped

    uvloop.run(serve_until_stopped("serving", build, lambda settings: (settings.serving_host, settings.serving_port)))
