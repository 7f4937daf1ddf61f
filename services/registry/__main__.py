"""`python -m services.registry`: the registry's consumers and its HTTP API in one process."""

from __future__ import annotations

import logging

import uvicorn
import uvloop

from services.registry.app import build
from shared.runner import service_settings

log = logging.getLogger("modelbus.registry")


async def main() -> None:
    """Start consuming, serve the API until SIGINT/SIGTERM, then stop cleanly."""
    settings = service_settings("registry")
    registry = build(settings)
    await registry.start()
    server = uvicorn.Server(
        uvicorn.Config(
            registry.api,
            host=settings.registry_host,
            port=settings.registry_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    log.info("registry API on http://%s:%d", settings.registry_host, settings.registry_port)
    try:
        await server.serve()
    finally:
        await registry.stop()


if __name__ == "__main__":
    uvloop.run(main())
