"""The registry as operators run it: `python -m services.registry` and the `modelbus` CLI against it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.contract.events import DataArrived, ModelEvaluated, RolloutChanged
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings
from tests.integration.conftest import eventually, free_port, service_process
from tests.integration.test_registry import example, trained

ROOT = Path(__file__).resolve().parents[2]
MODELBUS = Path(sys.executable).parent / "modelbus"
TOKENS = "adm-token=admin:alice,op-token=operator:olga,view-token=viewer:victor"


@pytest.fixture
async def registry_env(settings: Settings, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """A registry process on a free port; yields the environment the CLI needs to reach it."""
    port = free_port()
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_OTLP_ENDPOINT": "",
        "MODELBUS_API_TOKENS": TOKENS,
        "MODELBUS_REGISTRY_PORT": str(port),
        "MODELBUS_API_URL": f"http://127.0.0.1:{port}",
    }
    async with service_process("services.registry", env, port, tmp_path / "registry.log"):
        yield env


async def cli(env: dict[str, str], *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI against the registry, as the admin unless another token is given."""
    return await asyncio.to_thread(
        subprocess.run,
        [str(MODELBUS), *args],
        capture_output=True,
        text=True,
        env={**env, "MODELBUS_API_TOKEN": token or "adm-token"},
        timeout=120,
        check=False,
    )


async def test_operators_apply_specs_inspect_lineage_and_command_rollouts_from_the_cli(
    registry_env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    model = f"m-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "spec.yaml"
    spec.write_text((ROOT / "schemas/examples/model-spec.yaml").read_text().replace("model: churn", f"model: {model}"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace("selection_metric: roc_auc", "selection_metric: rmse"))

    applied = await cli(registry_env, "apply", "-f", str(spec), "--reason", "first spec")
    assert applied.returncode == 0, applied.stderr
    assert f"{model}: revision 1 applied" in applied.stdout
    refused = await cli(registry_env, "apply", "-f", str(bad))
    assert refused.returncode == 2
    assert "selection_metric (line 35): rmse is a regression metric" in refused.stderr
    as_viewer = await cli(registry_env, "apply", "-f", str(spec), token="view-token")
    assert as_viewer.returncode == 2 and "403: role viewer may not do this; it needs admin" in as_viewer.stderr

    bus = Bus(settings.model_copy(update={"service_name": "it-producer"}))
    await bus.start()
    try:
        await bus.publish(example(DataArrived, dataset="churn", version=f"{model}-data", sha256="d" * 64))
        await bus.publish(trained(model, f"{model}-r1", dataset_version=f"{model}-data"))

        async def registered() -> bool:
            shown = await cli(registry_env, "models", "show", model, token="view-token")
            return shown.returncode == 0 and "evaluating" in shown.stdout

        await eventually(registered, timeout=60, what=f"{model}@1 registered")
        await bus.publish(example(ModelEvaluated, model=model, version=1, decision="approved"))
        await bus.publish(
            example(
                RolloutChanged,
                model=model,
                rollout_id="ro-1",
                candidate_version=1,
                stable_version=None,
                from_state="none",
                to_state="promoted",
                reason="first version",
            )
        )

        async def champion() -> bool:
            shown = await cli(registry_env, "models", "show", f"{model}@champion", token="view-token")
            return shown.returncode == 0 and "serving" in shown.stdout

        await eventually(champion, timeout=60, what=f"{model}@champion")
    finally:
        await bus.stop()

    lineage = await cli(registry_env, "lineage", f"{model}@champion", token="view-token")
    assert lineage.returncode == 0, lineage.stderr
    for piece in (
        f"{model}@1  [serving]",
        f"dataset churn@{model}-data",
        "sha256 " + "d" * 64,
        f"training run {model}-r1  succeeded",
        "evaluation approved",
        "none -> promoted",
    ):
        assert piece in lineage.stdout, f"{piece!r} missing from:\n{lineage.stdout}"

    rollback = await cli(registry_env, "rollout", "rollback", model, "--reason", "bad canary", token="op-token")
    assert rollback.returncode == 0 and "RolloutCommanded" in rollback.stdout
    denied = await cli(registry_env, "rollout", "rollback", model, token="view-token")
    assert denied.returncode == 2 and "403" in denied.stderr
    audit = await cli(registry_env, "audit", "--target", model, token="view-token")
    assert audit.returncode == 0
    lines = audit.stdout.splitlines()
    assert "rollout-rollback" in lines[1] and "olga" in lines[1] and "bad canary" in lines[1]
    assert any("apply-spec" in line and "alice" in line and "first spec" in line for line in lines)


async def test_an_admin_makes_lists_and_revokes_a_service_account_from_the_cli(registry_env: dict[str, str]) -> None:
    name = f"ci-{uuid.uuid4().hex[:6]}"
    made = await cli(registry_env, "service-accounts", "create", name, "--workspace", "fraud", "--role", "operator")
    assert made.returncode == 0, made.stderr
    token = made.stdout.split("token (shown once): ")[1].split()[0]
    account = made.stdout.split(f"service account {name} (")[1].split(")")[0]
    assert token.startswith("mbsa_")
    whoami = await cli(registry_env, "service-accounts", "ls")
    assert name in whoami.stdout and "fraud" in whoami.stdout and token not in whoami.stdout
    refused = await cli(registry_env, "service-accounts", "ls", token=token)
    assert refused.returncode != 0 and "not an admin of any workspace" in refused.stderr
    revoked = await cli(registry_env, "service-accounts", "revoke", account, "--reason", "rotated")
    assert revoked.returncode == 0 and "revoked by alice" in revoked.stdout, revoked.stderr
