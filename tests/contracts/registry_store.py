"""What every registry store does for operators' commands, whatever keeps it: versions' statuses,
aliases, tags, spec revisions, datasets and the audit log."""

from __future__ import annotations

import uuid

import pytest

from services.registry import domain
from services.registry.store import RegistryStore as Store
from shared.contract.events import DataArrived, ModelTrained
from tests.support.examples import example
from tests.support.specs import example_spec


class RegistryStoreContract:
    """Subclasses give `store` (a fixture) for one backend; it must also register versions."""

    @staticmethod
    def model() -> str:
        return f"contract-{uuid.uuid4().hex[:8]}"

    async def version(self, store: Store, model: str) -> int:
        trained = example(ModelTrained, model=model, run_id=f"run-{uuid.uuid4().hex[:8]}")
        created, _ = await store.register_version(trained, event_id=str(uuid.uuid4()))
        return int(created.version)

    async def test_a_status_is_written_with_its_reason_and_a_parked_one_is_taken_once(self, store: Store) -> None:
        model = self.model()
        version = await self.version(store, model)
        assert await store.status_of(model, version) == "registered"
        await store.set_status(model, version, "evaluating", "handed over")
        assert await store.status_of(model, version, lock=True) == "evaluating"
        assert (await store.get_version(model, version)).status_reason == "handed over"
        assert await store.take_parked(model, version) is None
        await store.park(model, version, "serving", "promoted before its evaluation")
        assert await store.take_parked(model, version) == ("serving", "promoted before its evaluation")
        assert await store.take_parked(model, version) is None
        with pytest.raises(domain.NotFound):
            await store.status_of(model, version + 1)
        with pytest.raises(domain.NotFound):
            await store.set_status(model, version + 1, "approved", "no such version")

    async def test_an_alias_points_moves_and_goes(self, store: Store) -> None:
        model = self.model()
        first, second = await self.version(store, model), await self.version(store, model)
        await store.set_alias(model, "blue", first, by="ops")
        await store.set_alias(model, "blue", second, by="ops")
        assert (await store.get_model(model)).aliases == {"blue": second}
        assert await store.drop_alias(model, "blue")
        assert not await store.drop_alias(model, "blue")
        assert (await store.get_model(model)).aliases == {}

    async def test_a_tag_is_set_replaced_and_dropped(self, store: Store) -> None:
        model = self.model()
        version = await self.version(store, model)
        await store.set_tag(model, version, "team", "a")
        await store.set_tag(model, version, "team", "b")
        assert (await store.get_version(model, version)).tags == {"team": "b"}
        assert await store.drop_tag(model, version, "team")
        assert not await store.drop_tag(model, version, "team")

    async def test_a_changed_spec_is_the_next_revision_and_the_same_one_changes_nothing(self, store: Store) -> None:
        model = self.model()
        with pytest.raises(domain.NotFound):
            await store.latest_spec(model)
        spec = example_spec(model)
        first, changed = await store.apply_spec(spec, "yaml 1", applied_by="ops")
        assert changed and first.revision == 1
        again, changed = await store.apply_spec(spec, "yaml 1 again", applied_by="ops")
        assert not changed and again.revision == 1
        other = spec.model_copy(update={"target": "tenure_months"})
        second, changed = await store.apply_spec(other, "yaml 2", applied_by="ops")
        assert changed and second.revision == 2
        assert (await store.latest_spec(model)).revision == 2
        assert (await store.get_model(model)).spec_revision == 2

    async def test_a_model_or_dataset_nobody_named_does_not_exist(self, store: Store) -> None:
        with pytest.raises(domain.NotFound):
            await store.get_model(self.model())
        with pytest.raises(domain.NotFound):
            await store.get_dataset(self.model(), "v1")

    async def test_a_recorded_dataset_version_is_found_with_its_digest(self, store: Store) -> None:
        name = self.model()
        arrived = example(DataArrived, dataset=name, version="v1", sha256="c" * 64)
        assert await store.record_dataset(arrived, event_id=str(uuid.uuid4())) is None
        found = await store.get_dataset(name, "v1")
        assert (found.uri, found.sha256) == (arrived.uri, "c" * 64)
        other = arrived.model_copy(update={"sha256": "d" * 64})
        assert await store.record_dataset(other, event_id=str(uuid.uuid4())) == ("c" * 64, arrived.uri)
        assert (await store.get_dataset(name, "v1")).sha256 == "c" * 64, "a label's content never changes"

    async def test_the_audit_log_is_newest_first_and_a_model_matches_its_versions(self, store: Store) -> None:
        model = self.model()
        first = await store.audit(actor="ann", role="operator", action="set-tag", target=f"{model}@1")
        second = await store.audit(
            actor="bob", role="admin", action="retrain", target=model, outcome="refused", detail={"error": "x"}
        )
        assert second > first
        found = await store.audit_log(target=model)  # type: ignore[attr-defined]
        assert [(e.actor, e.outcome) for e in found] == [("bob", "refused"), ("ann", "ok")]
        assert [e.actor for e in await store.audit_log(target=model, action="set-tag")] == ["ann"]  # type: ignore[attr-defined]
