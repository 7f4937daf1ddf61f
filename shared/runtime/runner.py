"""Running a service process: settings, logs, start, wait for SIGINT/SIGTERM, stop.

A consuming service (trainer, evaluator, deployer, monitor) answers `/healthz`, `/readyz` and
`/metrics` on `MODELBUS_HEALTH_PORT` when that is set: what probes and Prometheus read, and what
`modelbus up` waits for. One with a small API of its own (the monitor's window history) serves it
there too.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.runtime.bus import Bus
from shared.runtime.settings import Settings, get_settings
from shared.runtime.telemetry import configure_logging


class Startable(Protocol):
    """What a service's composition root builds."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Service(Startable, Protocol):
    """A consuming service: its database, bus and metrics (what its health routes read)."""

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...

    @property
    def bus(self) -> Bus: ...

    @property
    def metrics(self) -> CollectorRegistry: ...


class HttpService(Startable, Protocol):
    """A service that also answers HTTP (its ASGI app)."""

    @property
    def api(self) -> Any: ...


def service_settings(name: str) -> Settings:
    """The process's settings, named after the service unless MODELBUS_SERVICE_NAME says otherwise."""
    settings = get_settings()
    if "service_name" not in settings.model_fields_set:
        settings = settings.model_copy(update={"service_name": name})
    if settings.kafka_sasl_username is None and settings.kafka_security_protocol.startswith("SASL"):
        # Each service is its own principal (shared.contract.topics): serving is `serving`.
        settings = settings.model_copy(update={"kafka_sasl_username": f"{settings.kafka_user_prefix}{name}"})
    configure_logging(settings)
    return settings


def settle_heap() -> None:
    """Move what start-up built (modules, models, clients) out of the garbage collector's sight.

    The cyclic collector otherwise walks those objects again and again while a busy consumer
    allocates events (measured: 9.0 µs to validate a logged prediction instead of 5.2).
    """
    gc.collect()
    gc.freeze()


def health_api(name: str, service: Service) -> Any:
    """The health, readiness and metrics routes of a service without an API of its own."""
    from fastapi import FastAPI

    from shared.runtime.httpapi import add_health_routes

    api = FastAPI(title=f"modelbus {name}", version="1", description="Health, readiness and metrics.")
    add_health_routes(api, service.sessions, service.bus, service.metrics)
    return api


async def run_until_stopped(name: str, build: Callable[[Settings], Service]) -> None:
    """Build the service, start it, and stop it cleanly on SIGINT or SIGTERM (serving its health
    routes on MODELBUS_HEALTH_PORT when set)."""
    settings = service_settings(name)
    service = build(settings)
    if settings.health_port:
        api = getattr(service, "api", None) or health_api(name, service)  # a service's own API includes them
        await _serve(name, service, api, (settings.health_host, settings.health_port), settings)
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    settle_heap()
    logging.getLogger(f"modelbus.{name}").info("%s running", name)
    try:
        await stop.wait()
    finally:
        await service.stop()


async def serve_until_stopped(
    name: str, build: Callable[[Settings], HttpService], address: Callable[[Settings], tuple[str, int]]
) -> None:
    """Build the service, start it, serve its HTTP API until SIGINT or SIGTERM (uvicorn's own
    handling), then stop the service cleanly."""
    settings = service_settings(name)
    service = build(settings)
    await _serve(name, service, service.api, address(settings), settings)


async def _serve(name: str, service: Startable, api: Any, address: tuple[str, int], settings: Settings) -> None:
    import uvicorn

    from shared.runtime.listener import server_config

    await service.start()
    settle_heap()
    host, port = address
    server = uvicorn.Server(server_config(api, host, port, settings))
    logging.getLogger(f"modelbus.{name}").info("%s running, HTTP on http://%s:%d", name, host, port)
    try:
        await server.serve()
    finally:
        await service.stop()
