"""A consumer process that dies (kill -9 style) inside its first handler, before the commit.

Run as `python -m tests.integration.crashing_consumer MARKER`; the test starts it twice.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from shared.contract import topics
from shared.contract.events import DataArrived
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.settings import Settings
from shared.runtime.uow import HandlerContext
from tests.integration.kafka_helpers import record_effect


async def main(marker: Path) -> None:
    settings = Settings(service_name="crashing-consumer")
    engine = make_engine(settings)
    bus = Bus(settings, sessions=make_sessions(engine))

    @bus.consumer(topics.DATA_ARRIVED, group="crashy", events=[DataArrived])
    async def on_data(event: DataArrived, ctx: HandlerContext) -> None:
        await record_effect(ctx.session, ctx.consumer, ctx.envelope.id, "crash-test")
        await ctx.session.flush()  # the row is written, the transaction not yet committed
        if not marker.exists():
            marker.write_text("crashed once")
            os._exit(17)

    await bus.start()
    print("consuming", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
