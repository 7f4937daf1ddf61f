"""Running a service process: settings, logs, start, wait for SIGINT/SIGTERM, stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from typing import Any, Protocol

from shared.settings import Settings, get_settings
from shared.telemetry import configure_logging


class Service(Protocol):
    """What a service's composition root builds."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class HttpService(Service, Protocol):
    """A service that also answers HTTP (its ASGI app)."""

    @property
    def api(self) -> Any: ...


def service_settings(name: str) -> Settings:
    """The process's settings, named after the service unless MODELBUS_SERVICE_NAME says otherwise."""
    settings = get_settings()
    if "service_name" not in settings.model_fields_set:
        settings = settings.model_copy(update={"service_name": name})
    configure_logging(settings)
    return settings


def settle_heap() -> None:
    """Move what start-up built (modules, models, clients) out of the garbage collector's sight.

    The cyclic collector otherwise walks those objects again and again while a busy consumer
    allocates events (measured: 9.0 µs to validate a logged prediction instead of 5.2).
    """
    gc.collect()
    gc.freeze()


async def run_until_stopped(name: str, build: Callable[[Settings], Service]) -> None:
    """Build the service, start it, and stop it cleanly on SIGINT or SIGTERM."""
    service = build(service_settings(name))
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
    import uvicorn

    settings = service_settings(name)
    service = build(settings)
    await service.start()
    settle_heap()
    host, port = address(settings)
    server = uvicorn.Server(
        uvicorn.Config(service.api, host=host, port=port, log_config=None, access_log=False, lifespan="off")
    )
    logging.getLogger(f"modelbus.{name}").info("%s on http://%s:%d", name, host, port)
    try:
        await server.serve()
    finally:
        await service.stop()
