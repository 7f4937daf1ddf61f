"""The registry's, the alerter's and serving's HTTP APIs fuzzed from their own OpenAPI documents
(schemathesis): whatever a caller sends, no answer is a server error. Bounded: a fixed seed, a
few dozen examples per operation and a time budget per API."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.runtime.settings import Settings
from tests.integration.conftest import free_port, service_process

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
TOKENS = "fuzz-admin=admin:fuzzer"


@pytest.mark.parametrize(
    ("module", "port_setting"),
    [
        ("services.registry", "MODELBUS_REGISTRY_PORT"),
        ("services.alerter", "MODELBUS_ALERTER_PORT"),
        ("services.deployer.serving", "MODELBUS_SERVING_PORT"),
    ],
)
@pytest.mark.timeout(400)
async def test_no_request_makes_the_api_answer_with_a_server_error(
    module: str, port_setting: str, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_OTLP_ENDPOINT": "",
        "MODELBUS_API_TOKENS": TOKENS,
        port_setting: str(port),
    }
    async with service_process(module, env, port, tmp_path / "service.log"):
        run = await asyncio.to_thread(
            subprocess.run,
            [
                str(SCHEMATHESIS), "run", f"http://127.0.0.1:{port}/openapi.json",
                "--checks", "not_a_server_error",
                "--max-examples", "25",
                "--max-time", "45",
                "--seed", "20261129",
                "--header", "Authorization: Bearer fuzz-admin",
                "--request-timeout", "30",
                "--suppress-health-check", "all",
                "--report-dir", str(tmp_path / "report"),
            ],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    summary = run.stdout[-6000:]
    assert run.returncode == 0, summary + run.stderr[-2000:]
    assert "No issues found" in summary or "passed" in summary.lower(), summary
