"""A consumer that dies mid-handler: the message comes back and is handled exactly once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.contract.events import DataArrived
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings
from tests.integration.conftest import eventually
from tests.integration.kafka_helpers import effects

ROOT = Path(__file__).resolve().parents[2]


def _consumer(settings: Settings, marker: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MODELBUS_TOPIC_PREFIX": settings.topic_prefix, "MODELBUS_OTLP_ENDPOINT": ""}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.crashing_consumer", str(marker)], cwd=ROOT, env=env
    )


async def test_a_handler_that_crashes_before_commit_is_redelivered_and_handled_once(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    marker = tmp_path / "crashed"
    first = _consumer(settings, marker)
    try:
        producer = Bus(settings)
        await producer.broker.start()
        event_id = await producer.publish(DataArrived(dataset="churn", version="crash", uri="s3://datasets/churn.csv"))
        await producer.broker.stop()
        code = await asyncio.to_thread(first.wait, 90)
        assert code == 17, "the first consumer should have died inside its handler"
        assert marker.exists()
        assert await effects(sessions, event_id) == 0, "nothing of the crashed attempt may remain"
    finally:
        if first.poll() is None:
            first.kill()

    second = _consumer(settings, marker)
    try:

        async def handled() -> bool:
            return await effects(sessions, event_id) == 1

        await eventually(handled, timeout=90, what="the redelivered message to be handled")
        await asyncio.sleep(3)  # a second, duplicate effect would show up here
        assert await effects(sessions, event_id) == 1
    finally:
        second.terminate()
        await asyncio.to_thread(second.wait, 30)
