"""The trainer mirrors its runs to a real `mlflow server` on loopback (MLflow unmodified, in the
benchmark's virtualenv): one parent run per training with one child run per candidate, their
params and CV and validation metrics, the dataset digest, spec revision and run id as tags, then
the version, as a tag and as an MLflow model version. Read back through MLflow's REST API."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.trainer import store as trainer_store
from shared.contract import topics
from shared.contract.events import DataArrived, ModelRegistered, ModelTrained
from shared.ops.example_data import write_churn
from shared.runtime.settings import Settings
from tests.integration.conftest import eventually, free_port
from tests.integration.test_trainer import (
    apply,
    arrival,
    events,
    holds,
    publish,
    services,  # noqa: F401 - the trainer tests' fixture, with this module's settings
    upload,
)
from tests.support.venvs import mlflow_python

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    executable = mlflow_python().parent / "mlflow"
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [str(executable), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--default-artifact-root", str(folder / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if process.poll() is not None:
                raise AssertionError(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            subprocess.run(["sleep", "0.5"], check=True)
        else:
            raise AssertionError("mlflow server did not answer /health in 60 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def trainer_settings(settings: Settings, mlflow_server: str) -> Settings:
    """The trainer tests' settings (see tests/integration/test_trainer.py), with the mirror on."""
    from pydantic import SecretStr

    update = {"api_tokens": SecretStr("adm=admin:alice"), "otlp_endpoint": None, "mlflow_tracking_uri": mlflow_server}
    return settings.model_copy(update=update)


async def mlflow(url: str, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        call = (
            http.get(f"/api/2.0/mlflow/{path}", params=body)
            if method == "GET"
            else http.post(f"/api/2.0/mlflow/{path}", json=body)
        )
        answer = await call
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


async def test_each_training_is_mirrored_as_a_parent_run_with_a_child_per_candidate_and_its_version(
    services: Callable[[str], Awaitable[Any]],  # noqa: F811 - the fixture imported above
    settings: Settings,
    mlflow_server: str,
    tmp_path: Path,
) -> None:
    registry = await services("registry")
    trainer = await services("trainer")
    model = f"mirror-{uuid.uuid4().hex[:6]}"
    await apply(registry, model)
    await holds(trainer, trainer_store.SpecRow, model, what="the trainer to know the spec")
    uri, digest = await upload(settings, write_churn(tmp_path / "churn.csv", rows=2000), f"datasets/{model}/v1.csv")
    await publish(settings, DataArrived(dataset=model, version="v1", uri=uri, sha256=digest))
    await arrival(settings, topics.MODEL_REGISTERED, model, timeout=180, what="ModelRegistered")
    [trained] = [e for e in await events(settings, topics.MODEL_TRAINED, model) if isinstance(e, ModelTrained)]
    [registered] = [e for e in await events(settings, topics.MODEL_REGISTERED, model) if isinstance(e, ModelRegistered)]

    async def version_mirrored() -> bool:
        found = await mlflow(mlflow_server, "GET", "model-versions/search", {"filter": f"name = '{model}'"})
        return bool(found.get("model_versions"))

    await eventually(version_mirrored, timeout=60, what="the MLflow model version")
    experiment = await mlflow(mlflow_server, "GET", "experiments/get-by-name", {"experiment_name": f"modelbus/{model}"})
    runs = (await mlflow(mlflow_server, "POST", "runs/search",
                         {"experiment_ids": [experiment["experiment"]["experiment_id"]]}))["runs"]  # fmt: skip
    [parent] = [r for r in runs if tags(r).get("modelbus.role") == "run"]
    children = [r for r in runs if tags(r).get("modelbus.role") == "candidate"]
    assert parent["info"]["status"] == "FINISHED"
    assert tags(parent) | {
        "modelbus.run_id": trained.run_id,
        "modelbus.data_sha256": digest,
        "modelbus.spec_revision": "1",
        "modelbus.dataset_version": "v1",
        "modelbus.version": str(registered.version),
    } == tags(parent), tags(parent)
    winner = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
    assert winner["validation_roc_auc"] == pytest.approx(trained.metrics["roc_auc"])
    assert len(children) == len(trained.candidates) == 2
    assert {tags(c)["mlflow.parentRunId"] for c in children} == {parent["info"]["run_id"]}
    ordered = sorted(children, key=lambda c: tags(c)["modelbus.candidate"])
    for child, candidate in zip(ordered, trained.candidates, strict=True):
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in child["data"]["metrics"]}
        assert params["estimator"] == candidate.estimator
        assert {k: str(v) for k, v in candidate.params.items()}.items() <= params.items()
        assert metrics["cv_score"] == pytest.approx(candidate.cv_score)
        assert metrics["validation_roc_auc"] == pytest.approx(candidate.score)
    [version] = (await mlflow(mlflow_server, "GET", "model-versions/search", {"filter": f"name = '{model}'"}))[
        "model_versions"
    ]
    assert version["run_id"] == parent["info"]["run_id"]
    assert {t["key"]: t["value"] for t in version["tags"]}["modelbus.version"] == str(registered.version)
    assert version["source"].startswith(("s3://", "file://")) and trained.run_id in version["source"]
