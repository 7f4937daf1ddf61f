"""The trainer's handlers on its in-memory store: data and specs queue runs (in either order),
retrains start new lifecycles, and what cannot be trained is refused with the reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.trainer import app
from services.trainer.handlers import TrainerRefusal, run_id_for
from shared.contract.events import DataArrived, FeedbackLineage, RetrainRequested, TrainingStarted
from shared.contract.spec import Monitoring
from tests.support.specs import example_spec, spec_applied

SPEC = example_spec()
MODEL, DATASET = SPEC.model, SPEC.dataset
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def arrived(version: str, *, dataset: str = DATASET, minutes: int = 0) -> DataArrived:
    return DataArrived(
        dataset=dataset,
        version=version,
        uri=f"s3://data/{dataset}/{version}.csv",
        sha256="e" * 64,
        occurred_at=T0 + timedelta(minutes=minutes),
    )


async def test_data_for_a_known_spec_queues_a_run_and_announces_it() -> None:
    bus = app.in_memory()
    await bus.handle(spec_applied())
    [started] = await bus.handle(arrived("v1"), event_id="data-1")
    assert isinstance(started, TrainingStarted)
    assert (started.model, started.trigger, started.dataset_version, started.data_sha256) == (
        MODEL,
        "data-arrived",
        "v1",
        "e" * 64,
    )
    assert started.run_id == run_id_for(MODEL, "data-1")
    [job] = bus.store.jobs.values()
    assert (job.dataset, job.version, job.revision, job.cause_event_id) == (DATASET, "v1", 1, "data-1")


async def test_data_before_the_first_spec_is_trained_on_when_the_spec_arrives() -> None:
    bus = app.in_memory()
    assert await bus.handle(arrived("v1")) == []
    assert await bus.handle(arrived("v2", minutes=5)) == []
    [started] = await bus.handle(spec_applied())
    assert started.dataset_version == "v2"


async def test_a_changed_spec_of_a_model_already_trained_queues_nothing() -> None:
    bus = app.in_memory()
    await bus.handle(spec_applied())
    await bus.handle(arrived("v1"))
    assert await bus.handle(spec_applied(MODEL, 2)) == []
    assert len(bus.store.jobs) == 1


async def test_redelivered_data_queues_no_second_run() -> None:
    bus = app.in_memory()
    await bus.handle(spec_applied())
    await bus.handle(arrived("v1"), event_id="data-1")
    assert await bus.handle(arrived("v1"), event_id="data-1") == []
    assert len(bus.store.jobs) == 1


async def test_new_data_is_only_kept_when_the_spec_does_not_retrain_on_data() -> None:
    spec = example_spec().model_copy(update={"monitoring": Monitoring(retrain_on=["drift"])})
    bus = app.in_memory()
    await bus.handle(spec_applied(spec=spec))
    assert len(await bus.handle(arrived("v1"))) == 1
    assert await bus.handle(arrived("v2", minutes=1)) == []
    assert await bus.store.dataset_version(DATASET, None) == "v2"


async def test_feedback_data_the_monitor_built_trains_its_model_even_without_retrain_on_data() -> None:
    other = example_spec("other-model")  # the same dataset, another model
    spec = example_spec().model_copy(update={"monitoring": Monitoring(retrain_on=["drift"])})
    bus = app.in_memory()
    await bus.handle(spec_applied(spec=spec))
    await bus.handle(spec_applied(spec=other))
    await bus.handle(arrived("v1"))
    lineage = FeedbackLineage(
        model=MODEL, versions=[1], windows=[], label_batches=["l-1"], feedback_rows=600, served_from=T0, served_to=T0
    )
    feedback = arrived("feedback-1", minutes=1).model_copy(update={"producer": "monitor", "lineage": lineage})
    [started] = await bus.handle(feedback)
    assert isinstance(started, TrainingStarted)
    assert (started.model, started.trigger, started.dataset_version) == (MODEL, "feedback", "feedback-1")


async def test_data_of_a_dataset_no_spec_names_trains_nothing() -> None:
    bus = app.in_memory()
    await bus.handle(spec_applied())
    assert await bus.handle(arrived("v1", dataset="other")) == []


async def test_every_model_on_a_dataset_trains_when_it_arrives() -> None:
    bus = app.in_memory()
    await bus.handle(spec_applied())
    await bus.handle(spec_applied(spec=example_spec("churn-b")))
    started = await bus.handle(arrived("v1"))
    assert sorted(s.model for s in started) == sorted([MODEL, "churn-b"])


async def test_a_retrain_trains_the_latest_data_in_a_new_trace() -> None:
    bus = app.in_memory()
    await bus.handle(spec_applied())
    await bus.handle(arrived("v1"))
    await bus.handle(arrived("v2", minutes=1))
    [started] = await bus.handle(RetrainRequested(model=MODEL, reason="drift", requested_by="monitor"))
    assert (started.trigger, started.dataset_version) == ("retrain-requested", "v2")
    assert bus.tracing.started == [f"lifecycle {MODEL} retrain"]


async def test_a_retrain_on_a_named_dataset_version_uses_it() -> None:
    bus = app.in_memory()
    await bus.handle(spec_applied())
    await bus.handle(arrived("v1"))
    await bus.handle(arrived("v2", minutes=1))
    [started] = await bus.handle(
        RetrainRequested(model=MODEL, dataset_version="v1", reason="operator", requested_by="ops")
    )
    assert started.dataset_version == "v1"


async def test_a_retrain_of_a_model_without_a_spec_is_refused_with_the_reason() -> None:
    bus = app.in_memory()
    with pytest.raises(TrainerRefusal, match="no spec applied"):
        await bus.handle(RetrainRequested(model=MODEL, reason="operator", requested_by="ops"))


async def test_a_retrain_on_a_dataset_version_that_never_arrived_is_refused_naming_it() -> None:
    bus = app.in_memory()
    await bus.handle(spec_applied())
    await bus.handle(arrived("v1"))
    with pytest.raises(TrainerRefusal, match="'v9'"):
        await bus.handle(RetrainRequested(model=MODEL, dataset_version="v9", reason="operator", requested_by="ops"))
    assert len(bus.store.jobs) == 1
