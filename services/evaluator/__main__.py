"""`python -m services.evaluator`: every registered version judged against its gates and the champion."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from services.evaluator.app import build
from shared.settings import get_settings
from shared.telemetry import configure_logging

log = logging.getLogger("modelbus.evaluator")


async def main() -> None:
    """Consume and evaluate until SIGINT/SIGTERM, then stop cleanly."""
    settings = get_settings()
    if "service_name" not in settings.model_fields_set:
        settings = settings.model_copy(update={"service_name": "evaluator"})
    configure_logging(settings)
    evaluator = build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await evaluator.start()
    log.info("evaluator running")
    try:
        await stop.wait()
    finally:
        await evaluator.stop()


if __name__ == "__main__":
    uvloop.run(main())
