"""Every modelbus HTTP listener's server: uvicorn with a deadline for each request's headers and
one for its body, besides uvicorn's own idle keep-alive timeout and concurrency cap.

uvicorn waits for a request's headers and body as long as the client keeps the connection open:
a hundred clients trickling a byte a second hold a hundred connections for ever (slowloris). Here a
connection has MODELBUS_HTTP_HEADER_TIMEOUT_SECONDS from its first byte (or from connecting) to
finish its headers, then MODELBUS_HTTP_BODY_TIMEOUT_SECONDS to finish its body, a second more for
every MODELBUS_HTTP_BODY_MIN_RATE_BYTES received; past either it is
answered 408 (headers) or cut (the application sees a disconnect), and logged."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.runtime.settings import Settings

log = logging.getLogger("modelbus.http")

TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a body deadline per request; the
    body's deadline moves a second later for every `body_rate` bytes received (so a large upload
    at a fair speed is never cut, as Apache's mod_reqtimeout does it)."""

    header_seconds = 10.0
    body_seconds = 20.0
    body_rate = 500

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._phase = "headers"

    def _arm(self, phase: str, seconds: float) -> None:
        """Give the request's `phase` `seconds` from now. One timer per connection: it is moved
        only by being checked when it fires, so a fast request costs no timer of its own."""
        self._phase = phase
        self._due = self.loop.time() + seconds
        if self._timer is not None and self._timer.when() > self._due:
            self._disarm()  # due sooner than the timer would look: look then
        if self._timer is None:
            self._timer = self.loop.call_at(self._due, self._check)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing() or self._phase == "idle":
            return  # between requests uvicorn's keep-alive timeout is the one that counts
        if self.loop.time() < self._due:  # the request moved on, or its body came on, meanwhile
            self._timer = self.loop.call_at(self._due, self._check)
            return
        log.warning("closed the connection of %s: its request's %s took too long", self.client, self._phase)
        if self._phase == "headers":
            self.transport.write(TIMED_OUT)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers", self.header_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase == "idle":  # the next request on a kept-alive connection
            self._arm("headers", self.header_seconds)

    def on_headers_complete(self) -> None:
        self._arm("body", self.body_seconds)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._due += len(body) / self.body_rate
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._phase = "idle"
        super().on_message_complete()


SHUTDOWN_GRACE_SECONDS = 10  # seconds requests in flight get to finish when the process stops (uvicorn: whole seconds)


def server_config(app: Any, host: str, port: int, settings: Settings, lifespan: str = "off") -> uvicorn.Config:
    """uvicorn's configuration for a modelbus listener, with the settings' timeouts and cap."""
    protocol = type(
        "Guarded",
        (GuardedHttp,),
        {
            "header_seconds": settings.http_header_timeout_seconds,
            "body_seconds": settings.http_body_timeout_seconds,
            "body_rate": settings.http_body_min_rate_bytes,
        },
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        log_config=None,
        access_log=False,
        lifespan=lifespan,  # type: ignore[arg-type]
        timeout_keep_alive=settings.http_idle_timeout_seconds,
        limit_concurrency=settings.http_max_connections,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,  # a stuck request never holds a stop
    )
