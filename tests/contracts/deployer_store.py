"""What every deployer store does, whatever keeps it."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from services.deployer import domain
from services.deployer.store import Command, DeployerStore
from shared.contract.events import ArtifactRef, ModelRegistered
from shared.contract.spec import Rollout as Policy


def registered(model: str, version: int) -> ModelRegistered:
    artifact = ArtifactRef(name="model.skops", uri=f"s3://b/{model}/{version}", sha256="d" * 64, size_bytes=2)
    return ModelRegistered(
        model=model,
        version=version,
        run_id="r",
        dataset_version="v1",
        task="classification",
        artifacts=[artifact],
        metrics={},
    )


class DeployerStoreContract:
    """Subclasses give `store` (a fixture) for one backend."""

    @staticmethod
    def model() -> str:
        return f"contract-{uuid.uuid4().hex[:8]}"

    async def test_a_decision_and_the_artifacts_of_a_version_are_kept_in_either_order(
        self, store: DeployerStore
    ) -> None:
        model = self.model()
        await store.decide(model, 1, "approved", approved=True)
        await store.keep_version(registered(model, 1))
        await store.keep_version(registered(model, 2))
        await store.decide(model, 2, "rejected", approved=False)
        one, two = await store.version_of(model, 1), await store.version_of(model, 2)
        assert one == domain.KnownVersion(tuple(registered(model, 1).artifacts), "approved", True)
        assert two is not None and (two.decision, two.approved, len(two.artifacts)) == ("rejected", False, 1)
        assert await store.version_of(model, 3) is None
        assert await store.newest_approved(model) == 1

    async def test_a_saved_rollout_and_model_state_are_what_the_next_lock_finds(self, store: DeployerStore) -> None:
        model = self.model()
        state = await store.lock(model)
        assert (state.champion, state.rollout_id, await store.current(state)) == (None, None, None)
        now = datetime(2026, 12, 1, tzinfo=UTC)
        started = domain.start(model, f"ro-{model}", 1, None, Policy(), now).rollout
        state = domain.ModelState(model, champion=1, rollout_id=started.rollout_id)
        await store.save(state, started, traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
        assert await store.lock(model) == state
        assert await store.current(state) == started
        later = replace(started, step=0, state="rolled-back")
        await store.save(replace(state, champion=None), later)
        assert (await store.lock(model)).champion is None
        assert await store.current(state) == later
        assert await store.traceparent_of(started.rollout_id) == "00-" + "1" * 32 + "-" + "2" * 16 + "-01"

    async def test_a_command_is_logged_once(self, store: DeployerStore) -> None:
        model = self.model()
        await store.log_command(Command(f"e-{model}", model, "pause", None, "ops", "done", "canary → paused"))
        await store.log_command(Command(f"e-{model}", model, "pause", None, "ops", "refused", "again"))
        await store.keep_version(registered(model, 1))
        state = await store.lock(model)
        now = datetime(2026, 12, 1, tzinfo=UTC)
        started = domain.start(model, f"ro-{model}", 1, None, Policy(), now).rollout
        await store.save(domain.after_save(state, started), started)
        [live] = await store.live_models(frozenset({model}))
        assert (live.model, live.rollout.candidate, list(live.artifacts)) == (model, 1, [1])
