"""The platform under hostile input (bench/hostile.py's corpus): every case gets a readable
rejection, every process stays up and keeps working, and no secret reaches a log."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from bench.hostile import Corpus, Outcome, table
from shared import topics
from shared.bus import aiokafka_options, ensure_topics
from shared.example_data import churn_frame
from shared.platform import Platform, processes
from shared.settings import Settings
from tests.integration.conftest import eventually

pytestmark = pytest.mark.timeout(1200)  # the corpus runs in the module's fixture


@dataclass
class Attacked:
    settings: Settings
    platform: Platform
    corpus: Corpus
    outcomes: list[Outcome]
    secrets: dict[str, str]


@pytest.fixture(scope="module")
async def attacked(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Attacked]:
    """One platform (seven processes) with its own topics, put through the whole corpus."""
    folder = tmp_path_factory.mktemp("hostile")
    root = folder / "data"
    root.mkdir()
    tokens = {role: f"{role}-{secrets.token_hex(16)}" for role in ("viewer", "operator", "admin")}
    settings = base_settings.model_copy(
        update={"topic_prefix": f"hostile-{uuid.uuid4().hex[:8]}", "stack_dir": folder, "file_roots": [root]}
    )
    await ensure_topics(settings)
    platform = Platform(
        settings,
        say=print,
        extra_env={
            "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
            "MODELBUS_API_TOKENS": ",".join(f"{token}={role}:{role}-user" for role, token in tokens.items()),
            "MODELBUS_FILE_ROOTS": f'["{root}"]',
            "MODELBUS_OTLP_ENDPOINT": "",
        },
    )
    platform.start()
    try:
        await platform.wait_ready()
        corpus = Corpus(settings, tokens, root, say=print)
        await corpus.prepare()
        outcomes = await corpus.run()
        known = {
            **{f"{role} token": token for role, token in tokens.items()},
            "a forged token": "forged-token",
            "the S3 secret key": (settings.s3_secret_access_key or SecretStr("")).get_secret_value(),
            "the database URL with its password": settings.database_url.split("://", 1)[1].split("@", 1)[0],
        }
        yield Attacked(settings, platform, corpus, outcomes, known)
    finally:
        platform.stop()
        admin = AIOKafkaAdminClient(**aiokafka_options(settings))
        await admin.start()
        try:
            await admin.delete_topics([settings.topic(spec.name) for spec in topics.CATALOG])
        finally:
            await admin.close()


def test_every_hostile_input_gets_a_readable_rejection(attacked: Attacked) -> None:
    outcomes = attacked.outcomes
    print("\n" + table(outcomes))
    assert len(outcomes) >= 40
    assert {o.family for o in outcomes} == {"event", "spec", "http", "data", "artifact"}
    wrong = [o for o in outcomes if not o.passed]
    assert wrong == [], table(wrong)


async def test_every_process_stays_up_and_keeps_working(attacked: Attacked) -> None:
    assert attacked.platform.dead() == []
    async with httpx.AsyncClient(timeout=5) as http:
        for process in processes(attacked.settings):
            assert (await http.get(f"{process.url}/readyz")).status_code == 200, process.name
    # After all that, good input is still handled: a dataset version is recorded and trained on.
    corpus = attacked.corpus
    await corpus.publish_data("after", corpus.upload("after.csv", churn_frame(1000, seed=21).to_csv(index=False)))
    viewer = corpus.auth("viewer")

    async def recorded() -> bool:
        async with httpx.AsyncClient(timeout=5) as http:
            answer = await http.get(f"{corpus.registry}/v1/datasets/{corpus.model}/after", headers=viewer)
            return answer.status_code == 200

    await eventually(recorded, timeout=60, what="the registry to record the good dataset version")

    async def trained() -> bool:
        async with httpx.AsyncClient(timeout=5) as http:
            answer = await http.get(f"{corpus.registry}/v1/models/{corpus.model}/versions", headers=viewer)
            return any(v.get("dataset_version") == "after" for v in answer.json())

    await eventually(trained, timeout=300, what="a version trained on the good data")


def test_no_secret_reaches_a_log(attacked: Attacked) -> None:
    logs = sorted(Path(attacked.platform.logs).glob("*.log"))
    assert len(logs) == 7, logs
    text = {path.name: path.read_text(errors="replace") for path in logs}
    assert all(text.values()), "every process logged something"
    leaks = [
        f"{what} in {name}"
        for what, secret in attacked.secrets.items()
        if secret
        for name, content in text.items()
        if secret in content
    ]
    assert leaks == []
