"""The one migration tree creates exactly the tables the services' models declare, and `db wait`
waits for it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.monitor.store import SqlStore
from shared.ops.migrations import metadata
from shared.runtime.db import alembic_config, head_revision, make_sessions
from shared.runtime.settings import Settings


async def test_migrations_at_head_match_every_table_the_code_declares(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), metadata())
        )
    # it_effects is the integration tests' own table, not part of the schema.
    missing = [d for d in differences if "it_effects" not in str(d)]
    assert missing == [], f"write a migration for: {missing}"


async def test_db_wait_holds_a_pod_back_until_the_schema_reaches_this_codes_head(base_settings: Settings) -> None:
    """`modelbus db wait` (each Kubernetes pod's init step) on a database one migration behind:
    it waits, saying why, and lets go once the migrations ran; against nothing it gives up."""
    name = f"wait_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(base_settings.database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = base_settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    env = {**os.environ, "MODELBUS_DATABASE_URL": url}
    try:
        head = head_revision(base_settings)
        behind = ScriptDirectory.from_config(alembic_config(base_settings)).get_revision(head).down_revision
        await asyncio.to_thread(command.upgrade, alembic_config(Settings(database_url=url)), str(behind))
        waiter = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.ops.cli", "db", "wait", "--timeout", "60",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert waiter.stdout is not None
        first = (await asyncio.wait_for(waiter.stdout.readline(), 30)).decode()
        assert f"waiting: database at {behind}, this code needs {head}" in first
        assert waiter.returncode is None, "it must not let go before the schema is there"
        await asyncio.to_thread(command.upgrade, alembic_config(Settings(database_url=url)), "head")
        rest = (await asyncio.wait_for(waiter.stdout.read(), 30)).decode()
        assert await waiter.wait() == 0 and f"[db] at {head}" in rest
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()

    nowhere = {**os.environ, "MODELBUS_DATABASE_URL": url.replace(":5432/", ":1/")}
    gave_up = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "shared.ops.cli", "db", "wait", "--timeout", "1"],
        env=nowhere, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert gave_up.returncode == 1 and "gave up after 1 s: database not reachable" in gave_up.stdout


async def test_answers_kept_before_0017_become_segments_and_labels_still_meet_them(base_settings: Settings) -> None:
    """A monitor upgraded mid-horizon loses no answer: rows of the old per-answer table become
    segments, the labelled ones stay labelled, and a label that comes after the upgrade still
    meets an answer served before it."""
    name = f"segments_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(base_settings.database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    settings = Settings(database_url=base_settings.database_url.rsplit("/", 1)[0] + f"/{name}")
    engine = create_async_engine(settings.database_url)
    now = datetime.now(UTC)
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(settings), "0016")
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO monitor_served (model, version, request_id, prediction, score, served_at, role,"
                    " label, labelled_at, evaluated) SELECT 'm', 1, 'r' || i, '1', 0.5, :now, 'stable',"
                    " CASE WHEN i < 3 THEN '1' END, CASE WHEN i < 3 THEN CAST(:now AS timestamptz) END, false"
                    " FROM generate_series(0, 24999) AS i"
                ),
                {"now": now},
            )
            await connection.execute(
                text(
                    "INSERT INTO monitor_labels (model, request_id, label, received_at, joined_at)"
                    " SELECT 'm', 'r' || i, '1', :now, :now FROM generate_series(0, 2) AS i"
                ),
                {"now": now},
            )
        await asyncio.to_thread(command.upgrade, alembic_config(settings), "0017")
        async with engine.begin() as connection:
            segments = (await connection.execute(text("SELECT rows, labelled FROM monitor_answers"))).all()
            assert sorted(r for r, _ in segments) == [5_000, 10_000, 10_000]
            assert sum(n for _, n in segments) == 3
            labelled = await connection.scalar(text("SELECT count(*) FROM monitor_labelled WHERE model = 'm'"))
            assert labelled == 3
        async with make_sessions(engine)() as session:
            store = SqlStore(session)
            parked = await store.park_labels(
                "m", {"r24000": ("0", "after"), "r1": ("1", "after")}, now, timedelta(days=1)
            )
            assert [(j.request_id, j.label) for j in parked.met.answers] == [("r24000", "0")]
            assert (parked.duplicated, parked.waiting) == (1, 0)  # r1 was labelled before the upgrade
    finally:
        await engine.dispose()
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
