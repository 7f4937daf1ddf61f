"""What every evaluator store does, whatever keeps it."""

from __future__ import annotations

import uuid

from services.evaluator.store import EvaluatorStore
from shared.contract.events import ArtifactRef, GateResult, ModelEvaluated, ModelRegistered, ModelSpecApplied
from tests.support.specs import example_spec, spec_applied


def registered(model: str, version: int) -> ModelRegistered:
    artifact = ArtifactRef(name="model.skops", uri=f"s3://b/{model}/{version}", sha256="b" * 64, size_bytes=3)
    return ModelRegistered(
        model=model,
        version=version,
        run_id=f"run-{version}",
        dataset_version="v1",
        task="classification",
        artifacts=[artifact],
        metrics={},
    )


def evaluated(model: str, version: int, decision: str) -> ModelEvaluated:
    gate = GateResult(name="g", metric="accuracy", value=1.0, threshold=0.5, comparator=">=", passed=True)
    return ModelEvaluated(
        model=model,
        version=version,
        champion_version=None,
        passed=decision != "rejected",
        decision=decision,
        gates=[gate],
        metrics={},
        test_rows=1,
    )


class EvaluatorStoreContract:
    """Subclasses give `store` (a fixture) for one backend."""

    @staticmethod
    def model() -> str:
        return f"contract-{uuid.uuid4().hex[:8]}"

    async def test_the_newest_spec_revision_is_kept_and_an_older_one_ignored(self, store: EvaluatorStore) -> None:
        model = self.model()
        assert await store.spec_of(model) is None
        newer: ModelSpecApplied = spec_applied(model, 2)
        assert await store.keep_spec(newer)
        assert not await store.keep_spec(spec_applied(model, 1))
        assert await store.spec_of(model) == example_spec(model)

    async def test_a_versions_artifacts_are_remembered_once(self, store: EvaluatorStore) -> None:
        model = self.model()
        first = registered(model, 1)
        await store.keep_version(first)
        await store.keep_version(registered(model, 1).model_copy(update={"artifacts": []}))
        assert await store.artifacts_of(model, 1) == first.artifacts
        assert await store.artifacts_of(model, 2) is None

    async def test_parked_registrations_come_back_once_oldest_first(self, store: EvaluatorStore) -> None:
        model = self.model()
        for version in (3, 1, 2):
            await store.park(registered(model, version))
        await store.park(registered(model, 1))
        assert [e.version for e in await store.unpark(model)] == [1, 2, 3]
        assert await store.unpark(model) == []

    async def test_the_first_result_of_a_version_stands(self, store: EvaluatorStore) -> None:
        model = self.model()
        assert await store.result_of(model, 1) is None
        await store.keep_result(evaluated(model, 1, "approved"), seconds=1.0)
        await store.keep_result(evaluated(model, 1, "rejected"), seconds=1.0)
        assert await store.result_of(model, 1) == "approved"
