"""Whether a retrain can help: drift with nothing new to learn from is skipped (RetrainSkipped says
why), newer data or a changed spec trains on it, the spec may opt in; and production feedback (the
features served, joined to their labels) becomes a dataset version to train on."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pandas as pd

from services.monitor import app
from services.monitor.feedback import MemorySink
from services.monitor.memory import MemoryStore
from shared.contract.events import (
    DataArrived,
    DriftDetected,
    Label,
    LabelsArrived,
    ModelRegistered,
    RetrainRequested,
    RetrainSkipped,
    TrainingStarted,
)
from shared.contract.spec import Feedback, Monitoring
from shared.runtime.memory import InMemoryBus
from tests.support.examples import example
from tests.support.specs import spec_applied
from tests.unit.monitor.test_handlers import MODEL, SPEC, WINDOW, canary_live, predictions, reference

TRAINED_ON = "2026-11-22"  # the example run's dataset version, at spec revision 3


def data(version: str, *, at: datetime | None = None) -> DataArrived:
    return example(
        DataArrived, dataset=SPEC.dataset, version=version, occurred_at=(at or datetime.now(UTC)).isoformat()
    )


async def serving_v1(
    monitoring: Monitoring | None = None, *, sink: MemorySink | None = None
) -> InMemoryBus[MemoryStore]:
    """v1 serves, trained on the newest dataset version with the spec in force (revision 3)."""
    bus = app.in_memory(sink=sink)
    spec = SPEC if monitoring is None else SPEC.model_copy(update={"monitoring": monitoring})
    await bus.handle(spec_applied(spec=spec, revision=3))
    await bus.handle(data(TRAINED_ON, at=datetime.now(UTC) - timedelta(hours=1)))
    await bus.handle(reference())
    await bus.handle(example(ModelRegistered, model=MODEL, version=1, run_id="run-1"))
    return bus


def after_cooldown(bus: InMemoryBus[MemoryStore]) -> None:
    at, reason, held = bus.store.retrains[MODEL]
    bus.store.retrains[MODEL] = (at - timedelta(seconds=SPEC.monitoring.retrain_cooldown_seconds + 1), reason, held)


async def test_drift_with_no_newer_data_trains_nothing_and_says_why_once_per_cooldown() -> None:
    bus = await serving_v1()
    emitted = await bus.handle(predictions(WINDOW, seed=3, shift=1.5))
    assert [type(e) for e in emitted] == [DriftDetected, RetrainSkipped]
    skipped = emitted[1]
    assert isinstance(skipped, RetrainSkipped)
    assert skipped.reason == f"drift persists; no data newer than v1's dataset (churn {TRAINED_ON})"
    assert (skipped.version, skipped.trained_on, skipped.latest_dataset_version) == (1, TRAINED_ON, TRAINED_ON)
    assert skipped.cause_event_id == bus.emitted_ids[0]
    # Within the cooldown: drift again, no second decision.
    assert [type(e) for e in await bus.handle(predictions(WINDOW, seed=4, shift=1.5))] == [DriftDetected]
    after_cooldown(bus)
    assert [type(e) for e in await bus.handle(predictions(WINDOW, seed=5, shift=1.5))] == [
        DriftDetected,
        RetrainSkipped,
    ]


async def test_drift_while_a_new_version_rolls_out_waits_for_its_verdict() -> None:
    bus = await serving_v1()
    await bus.handle(data("2026-12-01"))
    await canary_live(bus)
    assert [type(e) for e in await bus.handle(predictions(WINDOW, seed=3, shift=1.5))] == [DriftDetected]
    assert MODEL not in bus.store.retrains, "no retrain asked, so no cooldown started"


async def test_a_newer_dataset_version_is_trained_on() -> None:
    bus = await serving_v1()
    await bus.handle(data("2026-12-01"))
    emitted = await bus.handle(predictions(WINDOW, seed=3, shift=1.5))
    retrain = emitted[-1]
    assert isinstance(retrain, RetrainRequested) and retrain.dataset_version == "2026-12-01"


async def test_a_newer_dataset_already_in_training_is_not_trained_twice() -> None:
    bus = await serving_v1()
    await bus.handle(data("2026-12-01"))
    await bus.handle(
        example(TrainingStarted, model=MODEL, run_id="run-2", dataset_version="2026-12-01", spec_revision=3)
    )
    skipped = (await bus.handle(predictions(WINDOW, seed=3, shift=1.5)))[-1]
    assert isinstance(skipped, RetrainSkipped)
    assert skipped.reason == "drift persists; dataset churn 2026-12-01 with spec revision 3 was trained already"


async def test_a_changed_spec_is_trained_on_the_same_data() -> None:
    bus = await serving_v1()
    await bus.handle(spec_applied(spec=SPEC, revision=4))
    retrain = (await bus.handle(predictions(WINDOW, seed=3, shift=1.5)))[-1]
    assert isinstance(retrain, RetrainRequested) and retrain.dataset_version == TRAINED_ON


async def test_the_spec_may_opt_in_to_retrain_without_new_data() -> None:
    bus = await serving_v1(SPEC.monitoring.model_copy(update={"retrain_without_new_data": True}))
    retrain = (await bus.handle(predictions(WINDOW, seed=3, shift=1.5)))[-1]
    assert isinstance(retrain, RetrainRequested) and retrain.reason == "drift"


async def labelled_traffic(bus: InMemoryBus[MemoryStore], rows: int, *, seed: int) -> list[str]:
    """Steady traffic whose answers get labelled, right (so live performance holds)."""
    batch = predictions(rows, seed=seed)
    await bus.handle(batch)
    labels = [
        Label(request_id=rid, label=int(p), observed_at=datetime.now(UTC))
        for rid, p in zip(batch.request_id, batch.prediction, strict=True)
    ]
    await bus.handle(LabelsArrived(model=MODEL, labels=labels), event_id=f"labels-{seed}")
    return list(batch.request_id)


async def test_labelled_production_rows_become_a_dataset_version_when_a_retrain_has_no_new_data() -> None:
    sink = MemorySink(files={}, bases={})
    policy = SPEC.monitoring.model_copy(update={"feedback": Feedback(min_rows=200, max_rows=300)})
    bus = await serving_v1(policy, sink=sink)
    await labelled_traffic(bus, 400, seed=11)
    emitted = await bus.handle(predictions(WINDOW, seed=3, shift=1.5))
    arrived = emitted[-1]
    assert isinstance(arrived, DataArrived) and arrived.producer == "monitor"
    assert arrived.dataset == SPEC.dataset and arrived.format == "parquet" and arrived.row_count == 300
    assert arrived.lineage is not None and arrived.lineage.feedback_rows == 300
    assert arrived.lineage.label_batches == ["labels-11"] and arrived.lineage.versions == [1]
    assert arrived.lineage.cause_event_id == bus.emitted_ids[-2]  # the DriftDetected
    [(key, payload)] = sink.files.items()
    assert arrived.uri == f"file:///memory/{key}"
    written = pd.read_parquet(io.BytesIO(payload))
    assert list(written.columns) == [f.name for f in SPEC.features] + [SPEC.target]
    assert written[SPEC.target].dtype.kind == "i" and len(written) == 300
    # The new version is known at once: the next drift (after the cooldown) trains on it.
    after_cooldown(bus)
    retrain = (await bus.handle(predictions(WINDOW, seed=4, shift=1.5)))[-1]
    assert isinstance(retrain, RetrainRequested) and retrain.dataset_version == arrived.version


async def test_too_few_labelled_rows_for_feedback_skip_and_say_how_many() -> None:
    policy = SPEC.monitoring.model_copy(update={"feedback": Feedback(min_rows=500)})
    bus = await serving_v1(policy, sink=MemorySink(files={}, bases={}))
    await labelled_traffic(bus, 120, seed=12)
    skipped = (await bus.handle(predictions(WINDOW, seed=3, shift=1.5)))[-1]
    assert isinstance(skipped, RetrainSkipped) and (skipped.feedback_rows, skipped.feedback_needed) == (120, 500)
    assert skipped.reason.endswith("; 120 labelled production rows, 500 needed for feedback")


async def test_feedback_is_mixed_with_the_newest_dataset_as_the_spec_asks() -> None:
    base = pd.DataFrame({f.name: [1.0] * 100 if f.type == "numeric" else ["a"] * 100 for f in SPEC.features})
    base[SPEC.target] = 0
    sink = MemorySink(files={}, bases={TRAINED_ON: base})
    policy = SPEC.monitoring.model_copy(update={"feedback": Feedback(min_rows=200, max_rows=300, mix_with_latest=0.25)})
    bus = await serving_v1(policy, sink=sink)
    await labelled_traffic(bus, 300, seed=13)
    arrived = (await bus.handle(predictions(WINDOW, seed=3, shift=1.5)))[-1]
    assert isinstance(arrived, DataArrived) and arrived.lineage is not None
    assert (arrived.lineage.feedback_rows, arrived.lineage.mixed_rows, arrived.lineage.base_version) == (
        300,
        100,
        TRAINED_ON,
    )
    assert arrived.row_count == 400
