"""The evaluator judges a version in a child process of the sandbox: the verdict is the same as
in-process, a model file that names what modelbus does not load is rejected with no code run, and
the child sees none of the service's secrets."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from services.evaluator.judge import Judge
from services.trainer import fit
from shared.contract.events import ArtifactRef, ModelRegistered
from shared.runtime import sandbox
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.settings import Settings
from tests.support.craft import EXEC_CHAIN, crafted, payload
from tests.support.examples import example
from tests.unit.evaluator.conftest import SPEC


def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(Settings(artifact_url=(tmp_path / "artifacts").as_uri()))


def registered(artifacts: ArtifactStore, files: dict[str, bytes]) -> ModelRegistered:
    refs = []
    for name, data in files.items():
        stored = artifacts.put_bytes(f"churn/v2/{name}", data)
        refs.append(ArtifactRef(name=name, uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes))
    return example(ModelRegistered, model="churn", version=2, artifacts=[r.model_dump() for r in refs])


async def test_a_version_is_judged_in_the_sandbox_on_its_stored_test_split(
    trained: fit.Outcome, tmp_path: Path
) -> None:
    files = {name: Path(trained.files[name]).read_bytes() for name in ("model.skops", "test-split.parquet")}
    judge = Judge(store(tmp_path))
    try:
        verdict = await judge.verdict(SPEC, registered(store(tmp_path), files), None)
    finally:
        await judge.close()
    assert verdict.test_rows == len(pd.read_parquet(trained.files["test-split.parquet"]))
    assert {g.name for g in verdict.gates} >= {"min_roc_auc", "latency_p99_row"}
    assert verdict.metrics["roc_auc"] > 0.7 and verdict.decision in ("approved", "rejected")


async def test_the_exec_chain_file_is_rejected_unloaded_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    rows = pd.DataFrame({"tenure_months": [payload(str(marker))], "churned": [1]})
    split = io.BytesIO()
    rows.to_parquet(split, index=False)
    files = {"model.skops": crafted(EXEC_CHAIN), "test-split.parquet": split.getvalue()}
    judge = Judge(store(tmp_path))
    try:
        verdict = await judge.verdict(SPEC, registered(store(tmp_path), files), None)
    finally:
        await judge.close()
    [gate] = verdict.gates
    assert verdict.decision == "rejected" and gate.name == "artifact_types"
    assert "the function builtins.exec" in gate.detail
    assert not marker.exists()


def test_the_child_inherits_no_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELBUS_API_TOKENS", "admin-token=admin")
    monkeypatch.setenv("MODELBUS_S3_SECRET_ACCESS_KEY", "s3-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    env = sandbox.child_environment(tmp_path)
    assert not [name for name in env if name.startswith(("MODELBUS_", "AWS_"))]
    assert env["HOME"] == env["TMPDIR"] == str(tmp_path) and "PATH" in env


async def test_the_warm_sandbox_judges_one_version_after_another_each_in_a_fresh_child(
    trained: fit.Outcome, tmp_path: Path
) -> None:
    judge = Judge(store(tmp_path))
    files = {name: Path(trained.files[name]).read_bytes() for name in ("model.skops", "test-split.parquet")}
    try:
        first = await judge.verdict(SPEC, registered(store(tmp_path), files), None)
        warm = judge.warm.process
        second = await judge.verdict(SPEC, registered(store(tmp_path), files), None)
        assert judge.warm.process is warm, "one warm process, a child per version"
    finally:
        await judge.close()
    assert first.metrics == second.metrics and first.decision == second.decision
