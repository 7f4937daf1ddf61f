"""Integration fixtures: the real Kafka, PostgreSQL and S3 server of `modelbus stack up`.

Each test gets its own topic prefix (fresh topics, fresh consumer groups), so tests never
see each other's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.runtime.broker import drop_topics, ensure_topics
from shared.runtime.db import alembic_config, make_engine, make_sessions
from shared.runtime.settings import Settings


def _reachable(url: str) -> bool:
    parsed = urlparse(url if "://" in url else f"tcp://{url}")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((parsed.hostname or "127.0.0.1", parsed.port or 0)) == 0


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    settings = Settings(service_name="it")
    missing = [
        name
        for name, address in (
            ("Kafka", settings.kafka_bootstrap.split(",")[0]),
            ("PostgreSQL", settings.database_url.replace("postgresql+asyncpg", "tcp")),
            ("S3 server", settings.s3_endpoint_url or ""),
        )
        if not _reachable(address)
    ]
    if missing:
        pytest.fail(f"the local stack is not running ({', '.join(missing)} unreachable): run `modelbus stack up`")
    command.upgrade(alembic_config(settings), "head")
    return settings


@pytest.fixture
async def settings(base_settings: Settings) -> AsyncIterator[Settings]:
    """Settings with a fresh topic prefix whose catalog topics exist (deleted after the test). The
    test process is the stack's admin (a super user): no ACLs are granted for the prefix, except
    where a test asks for them (`acls`), as the platforms the tests start do for their services."""
    fresh = base_settings.model_copy(
        update={"topic_prefix": f"it-{uuid.uuid4().hex[:10]}", "handler_backoff_seconds": 0.05}
    )
    await ensure_topics(fresh, acls=False)
    yield fresh
    await drop_topics(fresh)


@pytest.fixture(scope="session")
async def engine(base_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(base_settings)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE TABLE IF NOT EXISTS it_effects ("
                " id bigserial PRIMARY KEY, consumer text NOT NULL, event_id text NOT NULL, note text)"
            )
        )
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessions(engine)


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 30, what: str = "condition") -> None:
    """Wait until `check()` is true, failing with `what` after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def start_bus(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Callable[..., Awaitable[object]]]:
    """Start Buses for a test (after their consumers are registered); all are stopped after it."""
    from shared.runtime.bus import Bus

    started: list[Bus] = []

    async def start(bus: Bus) -> Bus:
        await bus.start()
        started.append(bus)
        return bus

    yield start
    for bus in reversed(started):
        await bus.stop()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def service_process(module: str, env: dict[str, str], port: int, log: Path) -> AsyncIterator[None]:
    """`python -m <module>` with this environment, until its /readyz on `port` answers 200;
    terminated on exit. Its stderr goes to `log` (shown if it exits early)."""
    root = Path(__file__).resolve().parents[2]
    process = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, "-m", module], env=env, cwd=root, stderr=log.open("w")
    )

    async def ready() -> bool:
        assert process.poll() is None, f"{module} exited: {log.read_text()[-2000:]}"
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    try:
        await eventually(ready, timeout=60, what=f"{module}'s /readyz")
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
