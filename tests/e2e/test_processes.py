"""Services as separate processes, driven only through Kafka and HTTP: a producer in another
language (Kafka's Java console producer and raw JSON), and a deployer killed in the middle of a rollout."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from services.deployer import store as deployer_store
from shared.contract import topics
from shared.contract.envelope import decode
from shared.contract.events import (
    ArtifactRef,
    CanaryAnalyzed,
    Event,
    ModelEvaluated,
    ModelRegistered,
    ModelSpecApplied,
    RolloutChanged,
)
from shared.ops.tools import read_all, read_dead_letters
from shared.runtime.broker import ensure_acls
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec
from tests.integration.conftest import eventually, free_port, service_process
from tests.support.foreign import console_produce

ROOT = Path(__file__).resolve().parents[2]
TOKENS = "view-token=viewer:victor"


async def test_a_producer_in_another_language_is_understood_and_its_mistakes_are_dead_lettered(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_OTLP_ENDPOINT": "",
        "MODELBUS_API_TOKENS": TOKENS,
        "MODELBUS_REGISTRY_PORT": str(port),
    }
    dataset = f"orders-{uuid.uuid4().hex[:6]}"
    document = {
        "schema_version": "1.0",
        "dataset": dataset,
        "version": "2026-11-23",
        "uri": "s3://modelbus-artifacts/datasets/orders/2026-11-23.csv",
        "sha256": "c" * 64,
        "format": "csv",
        "row_count": 1200,
    }
    schema = json.loads((ROOT / "schemas/events/data-arrived.json").read_text())
    jsonschema.validate(document, schema)  # what the producer checks before sending
    broken = {k: v for k, v in document.items() if k != "uri"} | {"version": "broken"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)

    def headers(event_id: str) -> dict[str, str]:
        return {
            "ce_id": event_id,
            "ce_source": "/producers/orders-java",
            "ce_type": "io.modelbus.DataArrived",
            "ce_specversion": "1.0",
            "content-type": "application/json",
        }

    await ensure_acls(settings)  # the producer is an outside one, with the `producer` principal alone
    topic = settings.topic(topics.DATA_ARRIVED)
    async with service_process("services.registry", env, port, tmp_path / "registry.log"):
        await asyncio.to_thread(console_produce, settings, topic, dataset, json.dumps(document), headers("java-1"))
        await asyncio.to_thread(console_produce, settings, topic, dataset, json.dumps(broken), headers("java-2"))

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def recorded() -> bool:
                answer = await http.get(
                    f"/v1/datasets/{dataset}/2026-11-23", headers={"Authorization": "Bearer view-token"}
                )
                return answer.status_code == 200 and answer.json()["sha256"] == "c" * 64

            await eventually(recorded, timeout=30, what="the registry recording the Java producer's dataset version")

        async def dead_lettered() -> list[Any]:
            return [x.letter for x in await read_dead_letters(settings) if x.letter.original_event_id == "java-2"]

        await eventually(lambda: _some(dead_lettered), timeout=30, what="the broken message dead-lettered")
        [letter] = await dead_lettered()
        assert letter.error_type == "validation" and "field 'uri': Field required" in letter.reason


async def _some(found: Any) -> bool:
    return bool(await found())


# ---------------------------------------------------------------- a deployer killed mid-rollout


def _spec(model: str) -> ModelSpecApplied:
    example = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())
    rollout = example.rollout.model_copy(update={"steps": [10.0, 50.0, 100.0], "bake_seconds": 0, "min_samples": 10})
    spec = example.model_copy(update={"model": model, "dataset": model, "rollout": rollout})
    return ModelSpecApplied(model=model, revision=1, spec=spec, spec_yaml="-", spec_sha256="0" * 64, applied_by="it")


def _version(model: str, version: int) -> list[Event]:
    artifact = ArtifactRef(name="model.onnx", uri=f"s3://modelbus-artifacts/x/{version}", sha256="0" * 64, size_bytes=1)
    return [
        ModelRegistered(
            model=model,
            version=version,
            run_id=f"run-{version}",
            dataset_version="v1",
            task="classification",
            artifacts=[artifact],
            metrics={"accuracy": 0.8},
        ),
        ModelEvaluated(
            model=model,
            version=version,
            champion_version=version - 1 or None,
            passed=True,
            decision="approved",
            gates=[],
            metrics={"accuracy": 0.8},
            test_rows=100,
        ),
    ]


def _advance(model: str, rollout_id: str) -> CanaryAnalyzed:
    now = datetime.now(UTC)
    return CanaryAnalyzed(
        model=model,
        rollout_id=rollout_id,
        candidate_version=2,
        stable_version=1,
        verdict="advance",
        comparisons=[],
        candidate_samples=500,
        stable_samples=4500,
        window_start=now,
        window_end=now,
        reason="canary within every threshold",
    )


async def test_a_deployer_killed_mid_rollout_resumes_it_where_it_was(settings: Settings, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_OTLP_ENDPOINT": "",
        "MODELBUS_HEALTH_PORT": str(free_port()),
    }
    log = tmp_path / "deployer.log"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "services.deployer"], cwd=ROOT, env=env, stderr=log.open("ab"), stdout=log.open("ab")
        )

    model = f"churn-{uuid.uuid4().hex[:6]}"
    bus = Bus(settings.model_copy(update={"service_name": "it-producer"}))
    await bus.start()

    async def changes() -> list[RolloutChanged]:
        found = [decode(r.value, list(r.headers)).event for r in await read_all(settings, topics.ROLLOUT_CHANGED)]
        return [e for e in found if isinstance(e, RolloutChanged) and e.model == model]

    async def reached(count: int) -> bool:
        return len(await changes()) >= count

    engine = make_engine(settings)
    sessions = make_sessions(engine)

    async def has_spec() -> bool:
        async with sessions() as session:
            return await deployer_store.SqlStore(session).spec_of(model) is not None

    process = start()
    try:
        # Specs and versions travel on different topics: the spec first, as an operator applies it.
        await bus.publish(_spec(model))
        await eventually(has_spec, timeout=60, what="the deployer holding the spec")
        for event in _version(model, 1):
            await bus.publish(event)
        await eventually(lambda: reached(1), timeout=60, what="v1 promoted")
        for event in _version(model, 2):
            await bus.publish(event)
        await eventually(lambda: reached(2), timeout=60, what="v2's canary at 10 %")
        promoted, canary = await changes()
        assert (promoted.to_state, canary.to_state, canary.traffic[-1].percent) == ("promoted", "canary", 10)

        process.send_signal(signal.SIGKILL)  # mid-rollout
        process.wait(timeout=10)
        await bus.publish(_advance(model, canary.rollout_id))  # the monitor's verdict, while it is down
        process = start()
        await eventually(lambda: reached(3), timeout=60, what="the restarted deployer advancing the canary")
        await bus.publish(_advance(model, canary.rollout_id))
        await eventually(lambda: reached(4), timeout=60, what="the canary at 100 %")
        await bus.publish(_advance(model, canary.rollout_id))
        await eventually(lambda: reached(5), timeout=60, what="v2 promoted")
        await asyncio.sleep(2)
        moves = await changes()
        steps = [(m.from_state, m.to_state, m.step, m.traffic[-1].percent) for m in moves[1:]]
        assert steps == [
            ("pending", "canary", 0, 10),
            ("canary", "canary", 1, 50),
            ("canary", "canary", 2, 100),
            ("canary", "promoted", 2, 100),
        ], log.read_text()[-2000:]
        assert len({m.rollout_id for m in moves[1:]}) == 1, "the same rollout, resumed"
    finally:
        await bus.stop()
        await engine.dispose()
        process.terminate()
        process.wait(timeout=20)
