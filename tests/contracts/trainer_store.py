"""What every trainer store does (its handlers' side), whatever keeps it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.trainer.store import Dataset, JobRequest, TrainerStore
from shared.contract.events import DataArrived
from tests.support.specs import example_spec, spec_applied

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def arrived(dataset: str, version: str, minutes: int, uri: str = "file:///d.csv") -> DataArrived:
    return DataArrived(dataset=dataset, version=version, uri=uri, occurred_at=T0 + timedelta(minutes=minutes))


class TrainerStoreContract:
    """Subclasses give `store` (a fixture) for one backend."""

    @staticmethod
    def name() -> str:
        return f"contract-{uuid.uuid4().hex[:8]}"

    async def test_specs_are_found_by_model_and_by_the_dataset_they_name(self, store: TrainerStore) -> None:
        model, dataset = self.name(), self.name()
        spec = example_spec(model).model_copy(update={"dataset": dataset})
        assert await store.keep_spec(spec_applied(spec=spec, revision=2))
        assert not await store.keep_spec(spec_applied(spec=spec, revision=1))
        assert await store.spec_of(model) == (2, spec)
        assert await store.specs_for_dataset(dataset) == [(model, 2, spec)]
        assert await store.spec_of(self.name()) is None

    async def test_the_latest_dataset_version_is_the_last_to_arrive_and_the_first_announcement_wins(
        self, store: TrainerStore
    ) -> None:
        dataset = self.name()
        assert await store.dataset_version(dataset, None) is None
        await store.keep_dataset(arrived(dataset, "b", 1))
        await store.keep_dataset(arrived(dataset, "a", 2))
        await store.keep_dataset(arrived(dataset, "b", 3, uri="file:///other.csv"))
        assert await store.dataset_version(dataset, None) == "a"
        assert await store.dataset_version(dataset, "b") == "b"
        assert await store.dataset_version(dataset, "c") is None
        assert await store.dataset(dataset, "b") == Dataset(dataset, "b", "file:///d.csv", None, "csv")

    async def test_a_queued_run_counts_as_trained_and_is_queued_once(self, store: TrainerStore) -> None:
        model = self.name()
        assert not await store.ever_trained(model)
        job = JobRequest("it", f"run-{model}", model, "data-arrived", "d", "v1", 1, "c", "e", None)
        await store.add_job(job)
        await store.add_job(job)
        assert await store.ever_trained(model)
