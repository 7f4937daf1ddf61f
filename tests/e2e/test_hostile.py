"""The platform under hostile input (tests/support/hostile.py's corpus): every case gets a readable
rejection, every process stays up and keeps working, and no secret (the API tokens and the database
password come from mounted files) reaches a log, an error or `modelbus config`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from shared.ops.example_data import churn_frame
from shared.ops.platform import Platform, processes
from shared.runtime.broker import drop_topics
from shared.runtime.settings import Settings
from tests.integration.conftest import eventually
from tests.support.hostile import Corpus, Outcome, hostile_platform, secret_files, table

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
    """One platform (seven processes and the console) with its own topics, put through the whole corpus."""
    platform, corpus = await hostile_platform(base_settings, tmp_path_factory.mktemp("hostile"))
    settings = corpus.settings
    try:
        await corpus.prepare()
        outcomes = await corpus.run()
        known = {
            **{f"{role} token": token for role, token in corpus.tokens.items()},
            "a forged token": "forged-token",
            "the S3 secret key": (settings.s3_secret_access_key or SecretStr("")).get_secret_value(),
            "the database URL with its password": settings.database_url.split("://", 1)[1].split("@", 1)[0],
        }
        yield Attacked(settings, platform, corpus, outcomes, known)
    finally:
        platform.stop()
        await drop_topics(settings)


def test_every_hostile_input_gets_a_readable_rejection(attacked: Attacked) -> None:
    outcomes = attacked.outcomes
    print("\n" + table(outcomes))
    assert len(outcomes) >= 40
    assert {o.family for o in outcomes} == {"event", "spec", "http", "data", "artifact", "trust", "stall", "session"}
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
    assert len(logs) == 8, logs  # the seven processes and the console
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


def test_no_secret_reaches_modelbus_config_or_an_error(attacked: Attacked, tmp_path: Path) -> None:
    env = {**os.environ, **secret_files(tmp_path, attacked.settings, attacked.corpus.tokens)}
    cli = [sys.executable, "-m", "shared.ops.cli"]
    shown = subprocess.run([*cli, "config"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0 and "MODELBUS_DATABASE_PASSWORD" in shown.stdout, shown.stderr
    wrong = "Wr0ng-p4ss-7f3a"
    (tmp_path / "database-password").write_text(wrong + "\n")
    refused = subprocess.run(
        [*cli, "db", "wait", "--timeout", "1"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 1 and "password authentication failed" in refused.stdout + refused.stderr
    secrets = {**attacked.secrets, "a wrong database password": wrong}
    printed = {"modelbus config": shown.stdout + shown.stderr, "db wait": refused.stdout + refused.stderr}
    leaks = [
        f"{what} in {name}"
        for what, secret in secrets.items()
        for name, text in printed.items()
        if secret and secret in text
    ]
    assert leaks == []
