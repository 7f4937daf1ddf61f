"""`python -m services.trainer`: the trainer's consumers and its training worker."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from services.trainer.app import build
from shared.settings import get_settings
from shared.telemetry import configure_logging

log = logging.getLogger("modelbus.trainer")


async def main() -> None:
    """Consume and train until SIGINT/SIGTERM, then stop cleanly."""
    settings = get_settings()
    if "service_name" not in settings.model_fields_set:
        settings = settings.model_copy(update={"service_name": "trainer"})
    configure_logging(settings)
    trainer = build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await trainer.start()
    log.info("trainer running")
    try:
        await stop.wait()
    finally:
        await trainer.stop()


if __name__ == "__main__":
    uvloop.run(main())
