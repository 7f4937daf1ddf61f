"""Every listener cuts clients that trickle their headers or body (slowloris), answers the others
as before, and caps the requests in flight."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from shared.runtime.listener import server_config
from shared.runtime.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def server() -> AsyncIterator[str]:
    api = FastAPI()

    @api.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    port = free_port()
    settings = Settings(
        service_name="t", http_header_timeout_seconds=1.0, http_body_timeout_seconds=1.5, http_body_min_rate_bytes=500
    )
    running = uvicorn.Server(server_config(api, "127.0.0.1", port, settings))
    task = asyncio.create_task(running.serve())
    while not running.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        running.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)


async def trickle(address: str, at_once: bytes, trickled: bytes) -> tuple[float, bytes]:
    """Send `at_once`, then `trickled` a byte every 0.1 s: the seconds until the server closed the
    connection, and what it said."""
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    began = time.monotonic()
    heard = b""

    async def listen() -> None:
        nonlocal heard
        while chunk := await reader.read(1024):
            heard += chunk

    listening = asyncio.create_task(listen())
    with contextlib.suppress(ConnectionError):
        writer.write(at_once)
        for byte in trickled:
            if listening.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)
    await asyncio.wait_for(listening, 10)
    writer.close()
    return time.monotonic() - began, heard


async def test_trickled_headers_get_408_and_a_trickled_body_is_cut_within_the_timeouts(server: str) -> None:
    head = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" + b"x-pad: y\r\n" * 20 + b"\r\n"
    slow_headers = asyncio.create_task(trickle(server, b"", head))
    body_head = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 200\r\n\r\n"
    slow_body = asyncio.create_task(trickle(server, body_head, b"x" * 200))
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        fast = [await http.post("/echo", content=b"{}") for _ in range(5)]  # unaffected meanwhile
    assert all(r.status_code == 200 and r.json() == {"bytes": 2} for r in fast)
    seconds, said = await slow_headers
    assert 0.9 < seconds < 2.0 and said.startswith(b"HTTP/1.1 408"), (seconds, said)
    seconds, said = await slow_body
    assert 1.4 < seconds < 2.5 and said == b"", (seconds, said)  # 20 s of body, cut at 1.5 s


async def test_an_idle_connection_that_never_sends_a_byte_is_closed(server: str) -> None:
    host, port = server.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    began = time.monotonic()
    said = await asyncio.wait_for(reader.read(), 5)
    assert said.startswith(b"HTTP/1.1 408") and time.monotonic() - began < 2.0
    writer.close()


async def test_a_body_sent_at_a_fair_rate_outlives_the_base_timeout(server: str) -> None:
    host, port = server.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3000\r\n\r\n")
    for _ in range(5):  # 600 bytes every 0.5 s for 2.5 s: past the 1.5 s, faster than 500 bytes/s
        writer.write(b"x" * 600)
        await writer.drain()
        await asyncio.sleep(0.5)
    said = await asyncio.wait_for(reader.read(4096), 5)
    assert said.startswith(b"HTTP/1.1 200") and said.endswith(b'{"bytes":3000}'), said
    writer.close()
