"""`modelbus stack` as an operator uses it, against the running local stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared.contract import topics

MODELBUS = Path(sys.executable).parent / "modelbus"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODELBUS), *args], capture_output=True, text=True, timeout=120, check=False)


def test_a_second_stack_up_reports_what_runs_and_changes_nothing() -> None:
    before = run("stack", "status")
    again = run("stack", "up")
    after = run("stack", "status")
    assert again.returncode == 0, again.stderr
    for component in ("postgres", "s3", "traces", "kafka", "metrics"):
        assert f"[{component}] already running" in again.stdout
    assert f"[topics] 0 created, {len(topics.CATALOG)} already there" in again.stdout
    assert before.stdout == after.stdout, "pids and addresses must not change"


def test_status_lists_every_component_with_its_address() -> None:
    status = run("stack", "status")
    assert status.returncode == 0
    lines = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
    assert set(lines) == {"postgres", "s3", "traces", "kafka", "metrics"}
    assert all(" running " in line for line in lines.values())
    assert "127.0.0.1:9092" in lines["kafka"]
    assert "127.0.0.1:5432" in lines["postgres"]
    assert "http://127.0.0.1:9090 (scraping 7 processes)" in lines["metrics"]


async def test_the_specs_topic_is_log_compacted_and_the_others_are_not() -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from shared.runtime.broker import aiokafka_options
    from shared.runtime.settings import Settings

    settings = Settings()
    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        names = [settings.topic(topics.MODEL_SPEC_APPLIED), settings.topic(topics.DATA_ARRIVED)]
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    finally:
        await admin.close()
    policies = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}["cleanup.policy"]
        for response in responses
        for resource in response.resources
    }
    assert policies == {names[0]: "compact", names[1]: "delete"}
