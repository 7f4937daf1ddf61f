"""The alerter as operators run it: `python -m services.alerter` and `modelbus alerts` against it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.runtime.settings import Settings
from tests.integration.conftest import eventually, service_process
from tests.integration.test_alerter import SECRET, SECRET_ENV, Hook, config_text, drift, free_port, publish
from tests.integration.test_registry_cli import TOKENS, cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def alerter_env(settings: Settings, hook: Hook, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """An alerter process on a free port; yields the environment the CLI needs to reach it."""
    hook.start()
    config = tmp_path / "alerter.yaml"
    config.write_text(config_text(hook))
    port = free_port()
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_OTLP_ENDPOINT": "",
        "MODELBUS_API_TOKENS": TOKENS,
        "MODELBUS_ALERTER_CONFIG": str(config),
        "MODELBUS_ALERTER_PORT": str(port),
        "MODELBUS_ALERTER_URL": f"http://127.0.0.1:{port}",
        "MODELBUS_ALERTER_TICK_SECONDS": "0.2",
        SECRET_ENV: SECRET,
    }
    async with service_process("services.alerter", env, port, tmp_path / "alerter.log"):
        yield env


@pytest.fixture
def hook() -> Hook:
    return Hook(free_port())


async def test_operators_list_show_ack_silence_and_tail_alerts_from_the_cli(
    alerter_env: dict[str, str], settings: Settings, hook: Hook
) -> None:
    model = f"churn-{uuid.uuid4().hex[:6]}"
    await publish(settings, drift(model, version=2))

    async def listed() -> bool:
        return model in (await cli(alerter_env, "alerts", "ls", "--model", model)).stdout

    await eventually(listed, timeout=30, what="the alert in `modelbus alerts ls`")
    shown = await cli(alerter_env, "alerts", "ls", "--model", model, "--json")
    fingerprint = shown.stdout.split('"fingerprint": "')[1].split('"')[0]
    table = (await cli(alerter_env, "alerts", "ls", "--model", model)).stdout
    assert "firing" in table and "drift" in table
    assert f"{model} v2: drift in tenure (1000 rows)" in table

    refused = await cli(alerter_env, "alerts", "ack", fingerprint, token="view-token")
    assert refused.returncode == 2 and "403" in refused.stderr and "needs operator" in refused.stderr
    acked = await cli(alerter_env, "alerts", "ack", fingerprint, "-c", "retraining", token="op-token")
    assert acked.returncode == 0 and f"{fingerprint} acknowledged by olga" in acked.stdout

    await eventually(lambda: _sent(hook), timeout=30, what="the notification")
    detail = (await cli(alerter_env, "alerts", "show", fingerprint)).stdout
    assert "acked:       by olga" in detail and "retraining" in detail
    assert "notification" in detail and "to ops: sent after 1 attempt(s)" in detail
    assert f"lineage: http://127.0.0.1:8080/v1/models/{model}/versions/2/lineage" in detail

    tailed = await cli(alerter_env, "alerts", "tail", "--from-beginning", "--max", "1", "--idle", "10")
    assert f"FIRING   {fingerprint} drift {model}" in tailed.stdout

    made = await cli(
        alerter_env,
        "alerts",
        "silence",
        f"model={model}",
        "kind=~drift|performance",
        "--for",
        "1h",
        "-c",
        "known",
        token="op-token",
    )
    assert made.returncode == 0, made.stderr
    silence_id = made.stdout.split()[1]
    assert "active until" in made.stdout
    listed_silences = (await cli(alerter_env, "alerts", "silences")).stdout
    assert silence_id in listed_silences and "olga" in listed_silences and "known" in listed_silences
    muted = (await cli(alerter_env, "alerts", "ls", "--model", model)).stdout
    assert "silenced" in muted
    bad = await cli(alerter_env, "alerts", "silence", "model", "-c", "x", token="op-token")
    assert bad.returncode == 2 and "is not a matcher" in bad.stderr
    ended = await cli(alerter_env, "alerts", "silence", "--expire", silence_id, token="op-token")
    assert f"silence {silence_id} expired" in ended.stdout


async def _sent(hook: Hook) -> bool:
    return len(hook.received) >= 1
