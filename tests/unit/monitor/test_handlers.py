"""The monitor's handlers on its in-memory store: windows close at their size and are tested
against the version's reference, drift asks for one retrain per cooldown, windows wait for a
reference that arrives late, a canary's window is judged against stable, and labels judge live
performance."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import pandas as pd

from services.monitor import app
from services.monitor.memory import MemoryStore
from shared.contract.events import (
    CanaryAnalyzed,
    DriftDetected,
    Label,
    LabelsArrived,
    ModelRegistered,
    ModelTrained,
    PerformanceDegraded,
    Prediction,
    PredictionsLogged,
    RetrainRequested,
    RolloutChanged,
    TrafficShare,
)
from shared.contract.spec import Monitoring
from shared.ops.example_data import churn_frame
from shared.runtime.memory import InMemoryBus
from shared.runtime.profile import reference_profile
from tests.support.examples import example
from tests.support.specs import example_spec, spec_applied

SPEC = example_spec()
MODEL = SPEC.model
WINDOW = SPEC.monitoring.window_rows
FEATURES = [f.name for f in SPEC.features]


@functools.cache
def reference() -> ModelTrained:
    frame = churn_frame(2000, seed=1)
    profile = reference_profile(
        SPEC.features, frame, frame[SPEC.target].to_numpy(), task=SPEC.task, seed=SPEC.split.seed
    )
    return example(ModelTrained, model=MODEL, run_id="run-1", reference_profile=profile, metrics={"accuracy": 0.9})


def predictions(
    rows: int, *, seed: int, shift: float = 0.0, version: int = 1, role: str = "stable"
) -> PredictionsLogged:
    frame = churn_frame(rows, seed=seed, shift=shift)
    now = datetime.now(UTC)
    records = [
        Prediction(
            request_id=f"{seed}-{i}",
            model_version=version,
            role=role,  # type: ignore[arg-type]
            features={name: (None if pd.isna(row[name]) else row[name]) for name in FEATURES},
            prediction=int(row[SPEC.target]),
            probabilities={"0": 0.2, "1": 0.8} if row[SPEC.target] else {"0": 0.8, "1": 0.2},
            latency_ms=1.0,
            served_at=now + timedelta(milliseconds=i),
        )
        for i, (_, row) in enumerate(frame.iterrows())
    ]
    return PredictionsLogged.from_records(MODEL, f"batch-{seed}-{version}", records)


async def known(spec_monitoring: Monitoring | None = None) -> InMemoryBus[MemoryStore]:
    bus = app.in_memory()
    spec = SPEC if spec_monitoring is None else SPEC.model_copy(update={"monitoring": spec_monitoring})
    await bus.handle(spec_applied(spec=spec))
    await bus.handle(reference())
    await bus.handle(example(ModelRegistered, model=MODEL, version=1, run_id="run-1"))
    return bus


async def test_a_full_window_of_steady_traffic_is_tested_and_kept_without_drift() -> None:
    bus = await known()
    assert await bus.handle(predictions(WINDOW, seed=2)) == []
    [window] = bus.store.closed
    assert (window.rows, window.dataset_drift) == (WINDOW, False)
    assert {f["feature"] for f in window.result["features"]} == set(FEATURES)


async def test_a_window_that_is_not_full_stays_open() -> None:
    bus = await known()
    await bus.handle(predictions(WINDOW - 1, seed=2))
    assert bus.store.closed == [] and await bus.store.open_rows(MODEL, 1) == WINDOW - 1


async def test_drifted_traffic_is_detected_and_asks_for_a_retrain_naming_the_drift() -> None:
    bus = await known()
    emitted = await bus.handle(predictions(WINDOW, seed=3, shift=1.5))
    detected, retrain = emitted
    assert isinstance(detected, DriftDetected) and detected.dataset_drift
    assert any(f.drifted for f in detected.features)
    assert isinstance(retrain, RetrainRequested) and retrain.reason == "drift"
    assert retrain.cause_event_id == bus.emitted_ids[0]


async def test_drift_within_the_cooldown_asks_for_no_second_retrain() -> None:
    bus = await known()
    await bus.handle(predictions(WINDOW, seed=3, shift=1.5))
    again = await bus.handle(predictions(WINDOW, seed=4, shift=1.5))
    assert [type(e) for e in again] == [DriftDetected]
    assert bus.store.retrains[MODEL][2] == 1  # one held back


async def test_drift_does_not_ask_for_a_retrain_when_the_policy_does_not_retrain_on_it() -> None:
    bus = await known(SPEC.monitoring.model_copy(update={"retrain_on": ["data"]}))
    emitted = await bus.handle(predictions(WINDOW, seed=3, shift=1.5))
    assert [type(e) for e in emitted] == [DriftDetected]


async def test_rows_that_arrive_before_the_reference_wait_for_it_and_are_tested_a_window_at_a_time() -> None:
    bus = app.in_memory()
    await bus.handle(spec_applied())
    await bus.handle(predictions(WINDOW * 2 + 10, seed=5))
    assert bus.store.closed == []
    await bus.handle(reference())
    await bus.handle(example(ModelRegistered, model=MODEL, version=1, run_id="run-1"))
    await bus.handle(predictions(10, seed=6))
    assert [w.rows for w in bus.store.closed] == [WINDOW, WINDOW]
    assert await bus.store.open_rows(MODEL, 1) == 20


async def test_a_redelivered_batch_of_predictions_is_counted_once() -> None:
    bus = await known()
    batch = predictions(WINDOW // 2, seed=2)
    await bus.handle(batch, event_id="p-1")
    await bus.handle(batch, event_id="p-1")
    assert await bus.store.open_rows(MODEL, 1) == WINDOW // 2


async def canary_live(bus: InMemoryBus[MemoryStore]) -> None:
    traffic = [TrafficShare(version=1, percent=90, role="stable"), TrafficShare(version=2, percent=10, role="canary")]
    await bus.handle(example(ModelRegistered, model=MODEL, version=2, run_id="run-1"))
    await bus.handle(
        example(
            RolloutChanged,
            model=MODEL,
            rollout_id="ro-9",
            candidate_version=2,
            stable_version=1,
            from_state="pending",
            to_state="canary",
            traffic=traffic,
        )
    )


async def test_a_canary_window_like_stables_advances() -> None:
    bus = await known()
    await canary_live(bus)
    await bus.handle(predictions(WINDOW, seed=7))
    [analysed] = [
        e
        for e in await bus.handle(predictions(WINDOW, seed=8, version=2, role="canary"))
        if isinstance(e, CanaryAnalyzed)
    ]
    assert (analysed.rollout_id, analysed.verdict, analysed.candidate_samples) == ("ro-9", "advance", WINDOW)


async def test_a_canary_with_no_stable_window_to_compare_with_holds() -> None:
    bus = await known()
    await canary_live(bus)
    emitted = await bus.handle(predictions(WINDOW, seed=8, version=2, role="canary"))
    [analysed] = [e for e in emitted if isinstance(e, CanaryAnalyzed)]
    assert analysed.verdict == "hold" and "no closed window of the stable version 1" in analysed.reason


async def test_labels_that_show_accuracy_below_the_allowed_drop_degrade_and_ask_for_a_retrain() -> None:
    bus = await known()
    batch = predictions(200, seed=9)
    await bus.handle(batch)
    wrong = [
        Label(request_id=rid, label=1 - int(p), observed_at=datetime.now(UTC))
        for rid, p in zip(batch.request_id, batch.prediction, strict=True)
    ]
    degraded, retrain = await bus.handle(LabelsArrived(model=MODEL, labels=wrong))
    assert isinstance(degraded, PerformanceDegraded)
    assert (degraded.metric, degraded.value, degraded.baseline, degraded.labelled_rows) == ("accuracy", 0.0, 0.9, 200)
    assert isinstance(retrain, RetrainRequested) and retrain.reason == "performance"


async def test_labels_that_match_keep_quiet_and_shadow_answers_are_never_judged() -> None:
    bus = await known()
    batch = predictions(200, seed=9)
    shadow = predictions(50, seed=10, role="shadow")
    await bus.handle_many([batch, shadow])
    right = [
        Label(request_id=rid, label=int(p), observed_at=datetime.now(UTC))
        for rid, p in zip([*batch.request_id, *shadow.request_id], [*batch.prediction, *shadow.prediction], strict=True)
    ]
    assert await bus.handle(LabelsArrived(model=MODEL, labels=right)) == []
    answered = [a for a in bus.store.served if a.role != "shadow"]
    shadows = [a for a in bus.store.served if a.role == "shadow"]
    # Shadow answers are kept (canary analysis pairs them with the answer of the same request) and
    # labelled, but never judged as served answers.
    assert len(answered) == 200 and all(a.evaluated for a in answered)
    assert len(shadows) == 50 and all(a.label is not None and not a.evaluated for a in shadows)


async def test_the_sweep_closes_an_aged_window_through_the_unit_of_work_and_a_young_one_stays_open() -> None:
    import dataclasses

    from prometheus_client import CollectorRegistry

    from services.monitor import handlers, steps
    from services.monitor.metrics import Metrics
    from shared.runtime.commands import MemoryCommands

    bus = await known()
    await bus.handle(predictions(WINDOW // 2, seed=3, shift=1.5))
    await bus.handle(predictions(WINDOW // 2, seed=5, version=2))
    old = bus.store.windows[(MODEL, 1)]  # an hour passes for version 1's window
    bus.store.windows[(MODEL, 1)] = dataclasses.replace(old, first_at=old.first_at - timedelta(hours=1))
    commands = MemoryCommands(bus.store)
    watch = steps.Watch(Metrics(CollectorRegistry()), timedelta(days=7))
    closing = functools.partial(handlers.close_aged, watch=watch)
    aged = {(m, v): age for m, v, age in await bus.store.aged_windows(datetime.now(UTC))}
    assert not await commands.run(closing, handlers.CloseAged(MODEL, 2, aged[(MODEL, 2)]))
    assert await commands.run(closing, handlers.CloseAged(MODEL, 1, aged[(MODEL, 1)]))
    [window] = bus.store.closed
    assert (window.version, window.rows, window.dataset_drift) == (1, WINDOW // 2, True)
    assert any(isinstance(e, DriftDetected) for e in commands.emitted)
    assert await bus.store.open_rows(MODEL, 2) == WINDOW // 2
