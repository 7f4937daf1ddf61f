"""docs/integrations/feast.md, "Features from Feast", as a user runs it against the seven processes (real Kafka,
PostgreSQL and S3, real Feast on its local provider): apply the example feature repo, apply the
spec, publish the entity rows, and the loop trains with point-in-time features, evaluates, rolls
out; serving answers by key alone, and the lineage names the Feast views and digests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from shared.runtime.settings import Settings
from tests.support.scenarios import Loop

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]
MODELBUS = Path(sys.executable).parent / "modelbus"
MODEL = f"feast-churn-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feast") / "repo"


@pytest.fixture(scope="module")
async def loop(base_settings: Settings, repo: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loop]:
    running = Loop(
        base_settings,
        tmp_path_factory.mktemp("feast-loop"),
        extra_env={"MODELBUS_FEAST_REPO": str(repo), "MODELBUS_FEAST_MATERIALIZE_SECONDS": "0"},
    )
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def cli(loop: Loop, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")},
        "MODELBUS_API_URL": f"http://127.0.0.1:{loop.settings.registry_port}",
        "MODELBUS_API_TOKEN": loop.token,
    }
    return subprocess.run([str(MODELBUS), *args], env=env, capture_output=True, text=True, timeout=300, check=False)


async def test_the_readme_walkthrough_trains_on_feast_serves_by_key_and_shows_the_lineage(
    loop: Loop, repo: Path, tmp_path: Path
) -> None:
    applied = cli(loop, "feast", "apply", "--repo", str(repo))
    assert applied.returncode == 0, applied.stderr
    assert "Created feature view customer_activity" in applied.stdout and f"{repo} applied" in applied.stdout
    spec = (ROOT / "schemas/examples/model-spec-feast.yaml").read_text()
    spec = spec.replace("model: churn-feast", f"model: {MODEL}").replace("dataset: churn-feast", f"dataset: {MODEL}")
    (tmp_path / "spec.yaml").write_text(spec)
    done = cli(loop, "apply", "-f", str(tmp_path / "spec.yaml"))
    assert done.returncode == 0 and f"{MODEL}: revision 1 applied" in done.stdout, done.stdout + done.stderr
    written = cli(loop, "example-feast-data", "--out", str(tmp_path / "rows.csv"))
    assert written.returncode == 0, written.stderr
    await loop.publish(MODEL, "v1", pd.read_csv(tmp_path / "rows.csv"))

    url = f"http://127.0.0.1:{loop.settings.serving_port}/v1/models/{MODEL}:predict"
    request = {"instances": [{"customer_id": "c00042", "plan": "pro", "monthly_charges": 80.0}]}
    async with httpx.AsyncClient(timeout=30) as http:
        deadline = asyncio.get_running_loop().time() + 240
        while True:
            answer = await http.post(url, json=request)
            if answer.status_code == 200:
                break
            assert asyncio.get_running_loop().time() < deadline, f"never served: {answer.status_code} {answer.text}"
            await asyncio.sleep(1.0)
        prediction = answer.json()["predictions"][0]
        assert prediction["version"] == 1 and set(prediction["probabilities"]) == {"0", "1"}
        unknown = await http.post(url, json={"instances": [{**request["instances"][0], "customer_id": "nobody"}]})
        assert unknown.status_code == 422 and "customer_id='nobody'" in unknown.text

    lineage = cli(loop, "lineage", f"{MODEL}@1")
    assert lineage.returncode == 0, lineage.stderr
    assert "features from feast: 10 by customer_id as of event_timestamp (missing entity: reject)" in lineage.stdout
    assert "view customer_activity  offline source sha256" in lineage.stdout
