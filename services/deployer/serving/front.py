"""The predict route: rows routed one by one, checked against the answering version's schema,
predicted in micro-batches, logged, mirrored to a shadow; and the ASGI front that answers it
without the framework's per-request machinery."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Response

from services.deployer import domain
from services.deployer.serving.loading import InputError, Row, check_rows
from services.deployer.serving.metrics import Metrics
from services.deployer.serving.predlog import PredictionLog, Served
from services.deployer.serving.routing import Host, Live
from shared.runtime.settings import Settings

log = logging.getLogger("modelbus.serving")


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response, compact."""
    return Response(dumps(payload), status_code=status, media_type="application/json", headers=headers)


def dumps(payload: Any) -> bytes:
    """Compact JSON bytes (NaN refused)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False, default=str).encode()


@dataclass(frozen=True)
class Answer:
    """An HTTP answer of the predict route."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Predictor:
    """The predict route's work, shared by the fast ASGI front and the documented FastAPI route."""

    def __init__(self, settings: Settings, host: Host, metrics: Metrics, predictions: PredictionLog) -> None:
        self.settings = settings
        self.host = host
        self.metrics = metrics
        self.predictions = predictions

    def refuse(self, status: int, detail: Any, model: str, kind: str) -> Answer:
        self.metrics.errors.labels(model, kind).inc()
        return Answer(status, dumps({"detail": detail}))

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
            labels, probabilities = outcomes[version].labels, outcomes[version].probabilities
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
        logged_rows: list[dict[str, Any]] = list(rows)
        for version, indices in groups.items():
            loaded = live.engines[version].loaded
            if loaded.derived:  # the derived features the model saw, logged beside the raw ones
                for index, values in zip(indices, loaded.derived_values(checked[version]), strict=True):
                    logged_rows[index] = {**rows[index], **values}
        for index, answer in enumerate(answers):
            self.predictions.add(name, Served(live, logged_rows[index], answer, elapsed * 1000, served_at))
        mirrored = [i for i, r in enumerate(routes) if r.shadow is not None and r.shadow in live.engines]
        if mirrored:
            asyncio.get_running_loop().create_task(self.shadow(live, rows, mirrored, routes, answers, served_at))
        headers = {"x-request-id": request_id}
        if single:
            return Answer(200, dumps({"model": name, **answers[0]}), headers)
        return Answer(200, dumps({"model": name, "predictions": answers}), headers)

    async def shadow(
        self,
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
            predicted = await engine.batcher.submit(checked)
        except Exception as exc:
            self.metrics.errors.labels(live.model, "shadow").inc()
            log.info("%s: shadow v%d could not predict: %s", live.model, version, exc)
            return
        labels, probabilities = predicted.labels, predicted.probabilities
        classes = engine.loaded.classes
        for k, index in enumerate(mirrored):
            agreed = labels[k] == answers[index]["prediction"]
            self.metrics.shadow.labels(live.model, str(version), str(agreed).lower()).inc()
            answer: dict[str, Any] = {
                "request_id": answers[index]["request_id"],
                "version": version,
                "role": "shadow",
                "prediction": labels[k],
            }
            if probabilities is not None and classes is not None:
                answer["probabilities"] = dict(zip(engine.class_names, probabilities[k], strict=False))
            self.predictions.add(live.model, Served(live, rows[index], answer, 0.0, at))


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
