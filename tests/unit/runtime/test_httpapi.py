"""The request-size limit of the registry and alerter APIs."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI, Request
from starlette.testclient import TestClient

from shared.runtime.httpapi import BodyLimit


def app(limit: int) -> FastAPI:
    api = FastAPI()
    api.add_middleware(BodyLimit, limit=limit)

    @api.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return api


def test_a_body_over_the_limit_is_refused_with_413_whether_declared_or_streamed() -> None:
    client = TestClient(app(1024))
    assert client.post("/echo", content=b"x" * 1024).json() == {"bytes": 1024}
    declared = client.post("/echo", content=b"x" * 1025)
    assert declared.status_code == 413 and declared.json() == {"detail": "request body over 1024 bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(5):
            yield b"x" * 300

    streamed = client.post("/echo", content=chunks())
    assert streamed.status_code == 413 and streamed.json() == {"detail": "request body over 1024 bytes"}
    assert client.get("/echo").status_code == 405, "other requests pass through untouched"
