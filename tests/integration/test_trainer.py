"""The trainer against the real Kafka, PostgreSQL and S3 server: data in, a registered model out."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from services.evaluator import store as evaluator_store
from services.evaluator.app import Evaluator
from services.evaluator.app import build as build_evaluator
from services.registry.app import Registry
from services.registry.app import build as build_registry
from services.trainer import store as trainer_store
from services.trainer.app import Trainer
from services.trainer.app import build as build_trainer
from shared.contract import topics
from shared.contract.envelope import decode
from shared.contract.events import (
    ArtifactRef,
    DataArrived,
    Event,
    ModelEvaluated,
    ModelRegistered,
    ModelTrained,
    TrainingFailed,
    TrainingStarted,
)
from shared.ops.example_data import churn_frame, write_churn
from shared.ops.tools import read_all
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings
from tests.integration.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]
SPEC = (ROOT / "schemas/examples/model-spec.yaml").read_text()


def spec_yaml(model: str) -> str:
    """The example spec for `model`, with a small search so the test stays quick."""
    return (
        SPEC.replace("model: churn", f"model: {model}")
        .replace("dataset: churn", f"dataset: {model}")
        .replace("search: {method: random, iterations: 8, cv: 3}", "search: {method: random, iterations: 2, cv: 2}")
    )


@pytest.fixture
def trainer_settings(settings: Settings) -> Settings:
    update = {
        "api_tokens": SecretStr("adm=admin:alice"),
        "otlp_endpoint": None,
        "trainer_lease_seconds": 3.0,
    }
    return settings.model_copy(update=update)


@pytest.fixture
async def services(trainer_settings: Settings) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    started: list[Registry | Trainer | Evaluator] = []
    builders = {"registry": build_registry, "trainer": build_trainer, "evaluator": build_evaluator}

    async def start(kind: str) -> Registry | Trainer | Evaluator:
        named = trainer_settings.model_copy(update={"service_name": kind})
        service = builders[kind](named)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in reversed(started):
        await service.stop()


async def apply(registry: Registry, model: str) -> None:
    import httpx

    transport = httpx.ASGITransport(app=registry.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
        answer = await http.post(
            "/v1/specs", json={"spec_yaml": spec_yaml(model)}, headers={"Authorization": "Bearer adm"}
        )
        assert answer.status_code == 200, answer.text


async def upload(settings: Settings, path: Path, key: str) -> tuple[str, str]:
    stored = await asyncio.to_thread(ArtifactStore(settings).put_file, key, path)
    return stored.uri, stored.sha256


async def events(settings: Settings, topic: str, model: str) -> list[Event]:
    found = [decode(r.value, list(r.headers)).event for r in await read_all(settings, topic)]
    return [e for e in found if getattr(e, "model", None) == model]


async def arrival(settings: Settings, topic: str, model: str, *, timeout: float, what: str) -> list[Event]:
    """Wait until `model` has an event on `topic`; returns them all."""

    async def seen() -> bool:
        return bool(await events(settings, topic, model))

    await eventually(seen, timeout=timeout, what=what)
    return await events(settings, topic, model)


async def holds(service: Trainer | Evaluator, table: Any, model: str, *, what: str) -> None:
    """Wait until the service's `table` has a row for `model`."""

    async def found() -> bool:
        async with service.sessions() as session:
            return await session.scalar(select(table.model).where(table.model == model)) is not None

    await eventually(found, timeout=30, what=what)


async def publish(settings: Settings, event: Event) -> str:
    bus = Bus(settings.model_copy(update={"service_name": "it-producer"}))
    await bus.start()
    try:
        return await bus.publish(event)
    finally:
        await bus.stop()


async def test_data_arrival_trains_the_example_and_the_registry_registers_it(
    services: Callable[..., Awaitable[Any]], trainer_settings: Settings, tmp_path: Path
) -> None:
    registry = await services("registry")
    trainer = await services("trainer")
    model = f"churn-{uuid.uuid4().hex[:6]}"
    await apply(registry, model)
    # Data that overtook its spec would be trained when the spec arrives (its cause would be the spec).
    await holds(trainer, trainer_store.SpecRow, model, what="the trainer to know the spec")
    uri, digest = await upload(
        trainer_settings, write_churn(tmp_path / "churn.csv", rows=3000), f"datasets/{model}/v1.csv"
    )
    cause = await publish(trainer_settings, DataArrived(dataset=model, version=f"{model}-v1", uri=uri, sha256=digest))

    await arrival(trainer_settings, topics.MODEL_REGISTERED, model, timeout=180, what="ModelRegistered")
    [started] = await events(trainer_settings, topics.TRAINING_STARTED, model)
    [trained] = await events(trainer_settings, topics.MODEL_TRAINED, model)
    [version] = await events(trainer_settings, topics.MODEL_REGISTERED, model)
    assert isinstance(started, TrainingStarted) and started.causation_id == cause
    assert isinstance(trained, ModelTrained) and isinstance(version, ModelRegistered)
    assert trained.correlation_id == started.correlation_id == version.correlation_id
    assert trained.data_sha256 == digest and trained.dataset_version == f"{model}-v1"
    assert {a.name for a in trained.artifacts} == {"model.skops", "model.onnx", "test-split.parquet", "manifest.json"}
    assert trained.metrics["roc_auc"] > 0.7, trained.metrics
    assert set(trained.reference_profile.features) == {
        "tenure_months",
        "monthly_charges",
        "support_calls",
        "plan",
        "region",
    }
    store = ArtifactStore(trainer_settings)
    for artifact in trained.artifacts:
        data = await asyncio.to_thread(store.get_bytes, artifact.uri, sha256=artifact.sha256)
        assert len(data) == artifact.size_bytes
    assert version.version == 1 and version.run_id == trained.run_id


async def test_data_that_breaks_the_contract_fails_the_run_with_every_violation(
    services: Callable[..., Awaitable[Any]], trainer_settings: Settings, tmp_path: Path
) -> None:
    registry = await services("registry")
    await services("trainer")
    model = f"churn-{uuid.uuid4().hex[:6]}"
    await apply(registry, model)
    frame = churn_frame(300)
    frame.loc[:60, "region"] = None
    frame.loc[3, "plan"] = "platinum"
    bad = tmp_path / "bad.csv"
    frame.drop(columns=["support_calls"]).head(150).to_csv(bad, index=False)
    uri, digest = await upload(trainer_settings, bad, f"datasets/{model}/bad.csv")
    await publish(trainer_settings, DataArrived(dataset=model, version=f"{model}-bad", uri=uri, sha256=digest))

    [failure] = await arrival(trainer_settings, topics.TRAINING_FAILED, model, timeout=120, what="TrainingFailed")
    assert isinstance(failure, TrainingFailed) and failure.stage == "validate"
    assert {(v.column, v.rule) for v in failure.violations} == {
        (None, "min_rows"),
        ("support_calls", "required"),
        ("region", "max_null_fraction"),
        ("plan", "domain"),
    }
    assert await events(trainer_settings, topics.MODEL_TRAINED, model) == []


async def test_a_digest_that_does_not_match_the_data_fails_the_run_at_load(
    services: Callable[..., Awaitable[Any]], trainer_settings: Settings, tmp_path: Path
) -> None:
    registry = await services("registry")
    await services("trainer")
    model = f"churn-{uuid.uuid4().hex[:6]}"
    await apply(registry, model)
    uri, _ = await upload(trainer_settings, write_churn(tmp_path / "churn.csv", rows=500), f"datasets/{model}/v1.csv")
    await publish(trainer_settings, DataArrived(dataset=model, version=f"{model}-v1", uri=uri, sha256="0" * 64))

    [failure] = await arrival(trainer_settings, topics.TRAINING_FAILED, model, timeout=120, what="TrainingFailed")
    assert isinstance(failure, TrainingFailed) and failure.stage == "load"
    assert "SHA-256 mismatch" in failure.reason


async def test_a_trainer_killed_mid_fit_is_replaced_and_exactly_one_version_results(
    services: Callable[..., Awaitable[Any]], trainer_settings: Settings, tmp_path: Path
) -> None:
    registry = await services("registry")
    model = f"churn-{uuid.uuid4().hex[:6]}"
    await apply(registry, model)
    uri, digest = await upload(
        trainer_settings, write_churn(tmp_path / "churn.csv", rows=20000), f"datasets/{model}/v1.csv"
    )
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": trainer_settings.topic_prefix,
        "MODELBUS_OTLP_ENDPOINT": "",
        "MODELBUS_TRAINER_LEASE_SECONDS": "3",
    }
    log = (tmp_path / "trainer.log").open("w")
    doomed = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "services.trainer"],
        cwd=ROOT,
        env=env,
        stderr=log,
        start_new_session=True,
    )
    try:
        await publish(trainer_settings, DataArrived(dataset=model, version=f"{model}-v1", uri=uri, sha256=digest))

        await arrival(
            trainer_settings, topics.TRAINING_STARTED, model, timeout=60, what="TrainingStarted from the first trainer"
        )

        async def in_fit() -> bool:
            return "candidate 1/2" in (tmp_path / "trainer.log").read_text()

        await eventually(in_fit, timeout=60, what="the first trainer's fit to begin")
        await asyncio.sleep(1)
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)  # the trainer and its fit process
        doomed.wait(timeout=30)
        log.close()
    assert await events(trainer_settings, topics.MODEL_TRAINED, model) == [], "killed before it finished"
    await services("trainer")

    await arrival(
        trainer_settings, topics.MODEL_REGISTERED, model, timeout=240, what="ModelRegistered after the takeover"
    )
    await asyncio.sleep(3)
    assert len(await events(trainer_settings, topics.MODEL_TRAINED, model)) == 1
    [version] = await events(trainer_settings, topics.MODEL_REGISTERED, model)
    assert version.version == 1


async def test_the_example_goes_from_data_to_an_approved_evaluation_with_every_gate(
    services: Callable[..., Awaitable[Any]], trainer_settings: Settings, tmp_path: Path
) -> None:
    registry = await services("registry")
    await services("trainer")
    await services("evaluator")
    model = f"churn-{uuid.uuid4().hex[:6]}"
    await apply(registry, model)
    uri, digest = await upload(
        trainer_settings, write_churn(tmp_path / "churn.csv", rows=5000), f"datasets/{model}/v1.csv"
    )
    await publish(trainer_settings, DataArrived(dataset=model, version="v1", uri=uri, sha256=digest))

    [verdict] = await arrival(trainer_settings, topics.MODEL_EVALUATED, model, timeout=240, what="ModelEvaluated")
    assert isinstance(verdict, ModelEvaluated)
    gates = {g.name: g for g in verdict.gates}
    assert verdict.decision == "approved" and verdict.passed, [g for g in verdict.gates if not g.passed]
    assert {
        "min_accuracy",
        "min_roc_auc",
        "roc_auc_vs_champion_absolute",
        "roc_auc_vs_champion_relative",
        "probabilities_in_0_1",
        "min_class_rate",
        "max_class_rate",
        "latency_p99_row",
        "latency_p99_batch_1000",
        "fairness_demographic_parity_senior",
    } <= set(gates)
    assert gates["roc_auc_vs_champion_absolute"].detail == "no champion to compare with"
    assert verdict.test_rows == 1000 and verdict.metrics["roc_auc"] == gates["min_roc_auc"].value


async def test_a_tampered_artifact_is_rejected_with_a_checksum_reason_and_never_loaded(
    services: Callable[..., Awaitable[Any]], trainer_settings: Settings, tmp_path: Path
) -> None:
    registry = await services("registry")
    evaluator = await services("evaluator")
    model = f"churn-{uuid.uuid4().hex[:6]}"
    # Bytes that would run code if anything unpickled them; their digest is not the recorded one.
    bait = tmp_path / "model.skops"
    bait.write_bytes(b"\x80\x04cos\nsystem\n(S'touch /tmp/modelbus-pwned'\ntR.")
    stored = await asyncio.to_thread(ArtifactStore(trainer_settings).put_file, f"{model}/run-x/model.skops", bait)
    registered = ModelRegistered(
        model=model,
        version=1,
        run_id="run-x",
        dataset_version="v1",
        task="classification",
        artifacts=[ArtifactRef(name="model.skops", uri=stored.uri, sha256="ab" * 32, size_bytes=stored.size_bytes)],
        metrics={},
    )
    await publish(trainer_settings, registered)
    # The registration overtakes the spec: it waits, and is judged once the spec arrives.
    await holds(evaluator, evaluator_store.ParkedRow, model, what="the registration to be parked")
    await apply(registry, model)

    [verdict] = await arrival(trainer_settings, topics.MODEL_EVALUATED, model, timeout=60, what="ModelEvaluated")
    assert isinstance(verdict, ModelEvaluated) and verdict.decision == "rejected"
    assert [g.name for g in verdict.gates] == ["artifact_integrity"]
    assert verdict.gates[0].detail.startswith("checksum: SHA-256 mismatch")
    assert not Path("/tmp/modelbus-pwned").exists()
