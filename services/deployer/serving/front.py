"""Serving's ASGI front: the predict routes of every protocol answered directly (without the
framework's per-request machinery, the hot path), the rest by FastAPI; bearer tokens checked when
MODELBUS_SERVING_TOKENS is set (the health routes stay open); and `/v1`'s own body."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI, Response

from services.deployer.serving import scoring, v2
from services.deployer.serving.predictor import Answer, Predictor, Refused, decode, dumps

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/ping", "/health"})
WANTED = (b"x-request-id", b"content-type", b"inference-header-content-length", b"authorization")


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response, compact."""
    return Response(dumps(payload), status_code=status, media_type="application/json", headers=headers)


async def predict_v1(predictor: Predictor, name: str, body: bytes, headers: dict[str, str]) -> Answer:
    """`/v1/models/{name}:predict`: one row (`{"instance": {...}}`) or a batch (`{"instances": [...]}`)."""
    try:
        target = await predictor.target(name)
        payload = decode(body)
        single = isinstance(payload, dict) and "instance" in payload and "instances" not in payload
        rows = [payload["instance"]] if single else payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(rows, list) or not rows:
            shape = 'body must be {"instance": {feature: value, ...}} or {"instances": [{...}, ...]}, with a row'
            raise Refused(422, [shape], "bad-shape")
        request_id = predictor.request_id(headers.get("x-request-id"))
        outcome = await predictor.serve(
            target, rows, request_id, single=single, where="instance" if single else "instances"
        )
    except Refused as refused:
        predictor.count(refused, name)
        detail: Any = refused.errors if refused.status == 422 else str(refused)
        return Answer(refused.status, dumps({"detail": detail}))
    headers_out = {"x-request-id": outcome.request_id}
    if single:
        return Answer(200, dumps({"model": name, **outcome.answers[0]}), headers_out)
    return Answer(200, dumps({"model": name, "predictions": outcome.answers}), headers_out)


def route(method: str, path: str) -> tuple[str, tuple[str, str | None]] | None:
    """Which fast predict route a request is for: (protocol, (model, version)), or None."""
    if method != "POST":
        return None
    if path == "/invocations":
        return "mlflow", ("", None)
    if path.startswith("/v1/models/"):
        rest = path[len("/v1/models/") :]
        name, _, verb = rest.rpartition(":")
        if verb == "predict" and name and "/" not in name:
            return "v1", (name, None)
        name, _, verb = rest.rpartition("/")
        if verb == "invocations" and name and "/" not in name:
            return "mlflow", (name, None)
        return None
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = path[len("/v2/models/") : -len("/infer")].split("/")
        if len(parts) == 1 and parts[0]:
            return "v2", (parts[0], None)
        if len(parts) == 3 and parts[0] and parts[1] == "versions":
            return "v2", (parts[0], parts[2])
    return None


async def dispatch(
    predictor: Predictor, protocol: str, where: tuple[str, str | None], body: bytes, headers: dict[str, str]
) -> Answer:
    """Answer a predict request of any protocol."""
    name, version = where
    if protocol == "v1":
        return await predict_v1(predictor, name, body, headers)
    if protocol == "v2":
        return await v2.infer(predictor, name, version, body, headers)
    return await scoring.invocations(predictor, name or None, body, headers)


def too_large(protocol: str, message: str) -> Answer:
    """A 413 in the protocol's error shape."""
    if protocol == "v2":
        return v2.error(413, message)
    if protocol == "mlflow":
        return scoring.error(413, message)
    return Answer(413, dumps({"detail": message}))


class PredictFront:
    """The ASGI app serving runs: predict routes answered directly, the rest by FastAPI."""

    def __init__(self, predictor: Predictor, app: FastAPI) -> None:
        self.predictor = predictor
        self.app = app
        self.limit = predictor.settings.serving_max_body_bytes
        principals = predictor.settings.serving_principals()
        self.tokens = [(token.encode(), name) for token, name in principals.items()]

    def caller(self, authorization: str | None) -> str | None:
        """The caller behind a bearer token, or None; every token compared in constant time."""
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        candidate = presented.strip().encode()
        found = None
        for token, name in self.tokens:
            if hmac.compare_digest(token, candidate):
                found = name
        return found

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        fast = route(scope["method"], path)
        headers: dict[str, str] = {}
        if fast is not None or self.tokens:
            for key, value in scope["headers"]:
                if key in WANTED:
                    headers[key.decode()] = value.decode("latin-1")
                elif key == b"content-length" and value.isdigit():
                    headers["content-length"] = value.decode()
        if self.tokens and path not in OPEN_PATHS and self.caller(headers.get("authorization")) is None:
            self.predictor.metrics.unauthorized.inc()
            message = "a bearer token from MODELBUS_SERVING_TOKENS is required"
            if "authorization" in headers:
                message = "the bearer token is not one of MODELBUS_SERVING_TOKENS"
            body = dumps({"error": message} if path.startswith("/v2") else {"detail": message})
            await _send(send, Answer(401, body, {"www-authenticate": "Bearer"}))
            return
        if fast is None:
            await self.app(scope, receive, send)
            return
        protocol, where = fast
        declared = int(headers.get("content-length", "0"))
        if declared > self.limit:
            answer = too_large(protocol, f"body of {declared} bytes exceeds {self.limit}")
            self.predictor.metrics.errors.labels(where[0] or "-", "too-large").inc()
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
            if size > self.limit:
                answer = too_large(protocol, f"body exceeds {self.limit} bytes")
                self.predictor.metrics.errors.labels(where[0] or "-", "too-large").inc()
            else:
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                answer = await dispatch(self.predictor, protocol, where, body, headers)
        await _send(send, answer)


async def _send(send: Any, answer: Answer) -> None:
    headers = [(b"content-type", answer.media_type.encode()), (b"content-length", str(len(answer.body)).encode())]
    headers += [(k.encode(), v.encode("latin-1")) for k, v in answer.headers.items()]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
