"""Two platforms on one PostgreSQL database, side by side: each has its own schema
(MODELBUS_DATABASE_SCHEMA) and topic prefix. What one does is invisible to the other: the
registry's lists and models (through its API), the monitor's live rollouts, the trainer's job
queue, the alerter's alerts, the deployer's model state, and every table row by row."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic import command
from pydantic import SecretStr
from sqlalchemy import func, select, text

from services.alerter import domain as alerter_domain
from services.alerter.store import SqlStore as AlerterStore
from services.deployer import store as deployer_store
from services.monitor.store import SqlStore as MonitorStore
from services.registry.app import Registry, build
from services.trainer import store as trainer_store
from shared.ops.migrations import metadata
from shared.runtime.broker import drop_topics, ensure_topics
from shared.runtime.db import alembic_config, make_engine, make_sessions
from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "platforms-admin"


@pytest.fixture
async def platforms(settings: Settings) -> AsyncIterator[tuple[Settings, Settings]]:
    run = uuid.uuid4().hex[:8]
    update = {"api_tokens": SecretStr(f"{TOKEN}=admin:root"), "otlp_endpoint": None}
    first = settings.model_copy(update={**update, "database_schema": f"it_{run}_a"})
    second = settings.model_copy(update={**update, "database_schema": f"it_{run}_b", "topic_prefix": f"it-{run}-b"})
    await ensure_topics(second, acls=False)
    for platform in (first, second):
        await asyncio.to_thread(command.upgrade, alembic_config(platform), "head")
    yield first, second
    engine = make_engine(settings)
    async with engine.begin() as connection:
        for platform in (first, second):
            await connection.execute(text(f'DROP SCHEMA "{platform.database_schema}" CASCADE'))
    await engine.dispose()
    await drop_topics(second)


async def started(settings: Settings) -> Registry:
    registry = build(settings.model_copy(update={"service_name": "registry"}))
    await registry.start()
    return registry


async def test_what_one_platform_does_the_other_on_the_same_database_never_sees(
    platforms: tuple[Settings, Settings],
) -> None:
    first, second = platforms
    model = f"twin-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    registries = [await started(first), await started(second)]
    try:
        spec = (ROOT / "schemas/examples/model-spec.yaml").read_text().replace("model: churn", f"model: {model}")
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=r.api), base_url="http://registry") for r in registries
        ]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        applied = await clients[0].post("/v1/specs", json={"spec_yaml": spec}, headers=auth)
        assert applied.status_code == 200, applied.text
        assert model in {m["name"] for m in (await clients[0].get("/v1/models", headers=auth)).json()}
        assert model not in {m["name"] for m in (await clients[1].get("/v1/models", headers=auth)).json()}
        assert (await clients[1].get(f"/v1/models/{model}", headers=auth)).status_code == 404
        for client in clients:
            await client.aclose()
    finally:
        for registry in registries:
            await registry.stop()

    engines = [make_engine(p) for p in platforms]
    sessions = [make_sessions(e) for e in engines]
    try:
        # The first platform: a live rollout the monitor and serving read, a queued training job, an alert.
        async with sessions[0]() as session, session.begin():
            await MonitorStore(session).keep_live(model, "ro-1", "canary", 2, 1)
            await deployer_store.SqlStore(session).lock(model)
            await trainer_store.SqlStore(session).add_job(
                trainer_store.JobRequest(
                    platform=first.topic_prefix, run_id=f"run-{model}", model=model, trigger="data", dataset=model,
                    version="v1", revision=1, correlation_id="c-1", cause_event_id="e-0", traceparent=None,
                )
            )  # fmt: skip
            alert = alerter_domain.Alert(
                model=model,
                labels={"alertname": "ModelDriftDetected", "model": model, "kind": "drift"},
                annotations={},
                severity="warning",
                source_event_type="DriftDetected",
                source_event_id="e-1",
            )
            await AlerterStore(session, first.topic_prefix).raise_alert(alert, now)
        for index, seen in enumerate((True, False)):
            async with sessions[index]() as session:
                assert (await MonitorStore(session).live_of(model) is not None) is seen
                assert bool(await AlerterStore(session, first.topic_prefix).firing_of(model)) is seen
                queued = await session.scalar(
                    select(func.count()).select_from(trainer_store.JobRow).where(trainer_store.JobRow.model == model)
                )
                assert bool(queued) is seen
        # Row by row: the second platform's schema holds nothing of the first's, in any table.
        async with engines[1].connect() as connection:
            for name, table in sorted(metadata().tables.items()):
                count = (await connection.execute(select(func.count()).select_from(table))).scalar_one()
                assert count == 0, f"{name} of the second platform has {count} rows"
        async with engines[0].connect() as connection:
            rows = (await connection.execute(text("SELECT count(*) FROM registry_models"))).scalar_one()
            assert rows == 1, "the first platform's registry holds its model"
    finally:
        for engine in engines:
            await engine.dispose()
