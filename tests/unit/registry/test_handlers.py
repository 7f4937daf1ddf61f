"""The registry's handlers on its in-memory store: versions numbered once per run, statuses that
follow evaluations and rollouts, aliases that move with them, and every other lifecycle event
kept in the model's history."""

from __future__ import annotations

import pytest

from services.registry import app, domain
from shared.contract.events import (
    AlertRaised,
    DataArrived,
    DriftDetected,
    GateResult,
    ModelEvaluated,
    ModelRegistered,
    ModelTrained,
    RolloutChanged,
    TrafficShare,
    TrainingFailed,
)
from shared.runtime.memory import InMemoryBus
from tests.support.examples import example

MODEL = "churn"


def trained(run: str) -> ModelTrained:
    return example(ModelTrained, model=MODEL, run_id=run)


def evaluated(version: int, decision: str, *, failed: str | None = None) -> ModelEvaluated:
    gates = [
        GateResult(name=failed or "ok", metric="accuracy", value=0.5, threshold=0.7, comparator=">=", passed=not failed)
    ]
    return example(ModelEvaluated, model=MODEL, version=version, decision=decision, passed=not failed, gates=gates)


def rollout(candidate: int, stable: int | None, to_state: str, rollout_id: str = "ro-1") -> RolloutChanged:
    traffic = [TrafficShare(version=candidate, percent=100, role="canary")]
    return example(
        RolloutChanged,
        model=MODEL,
        rollout_id=rollout_id,
        candidate_version=candidate,
        stable_version=stable,
        from_state="canary",
        to_state=to_state,
        traffic=traffic,
        reason="test",
    )


async def registered(bus: InMemoryBus[object], run: str) -> ModelRegistered:
    [event] = await bus.handle(trained(run))
    assert isinstance(event, ModelRegistered)
    return event


async def serving(bus: InMemoryBus[object], version: int, stable: int | None) -> None:
    await bus.handle(evaluated(version, "approved"))
    await bus.handle(rollout(version, stable, "promoted", rollout_id=f"ro-{version}"))


async def status(bus: InMemoryBus[object], version: int) -> str:
    return (await bus.store.get_version(MODEL, version)).status  # type: ignore[attr-defined]


def memory_bus() -> InMemoryBus[object]:
    return app.in_memory()  # type: ignore[return-value]


async def test_a_trained_model_gets_the_next_version_and_goes_to_the_evaluator_with_the_champion() -> None:
    bus = memory_bus()
    first = await registered(bus, "run-1")
    assert (first.version, first.champion_version, first.run_id) == (1, None, "run-1")
    await serving(bus, 1, None)
    second = await registered(bus, "run-2")
    assert (second.version, second.champion_version) == (2, 1)


async def test_the_same_run_delivered_again_under_a_new_id_gets_no_second_version() -> None:
    bus = memory_bus()
    await registered(bus, "run-1")
    assert await bus.handle(trained("run-1")) == []
    assert list(bus.store.versions) == [(MODEL, 1)]  # type: ignore[attr-defined]


async def test_a_redelivered_event_changes_nothing() -> None:
    bus = memory_bus()
    await bus.handle(trained("run-1"), event_id="t-1")
    assert await bus.handle(trained("run-1"), event_id="t-1") == []


async def test_a_dataset_version_is_recorded_once_and_another_content_under_its_label_is_refused() -> None:
    bus = memory_bus()
    data = example(DataArrived, dataset="churn", version="v1", sha256="1" * 64)
    await bus.handle(data)
    await bus.handle(example(DataArrived, dataset="churn", version="v1", sha256="1" * 64))
    with pytest.raises(domain.RegistryRefusal, match="A version label names one content"):
        await bus.handle(example(DataArrived, dataset="churn", version="v1", sha256="2" * 64))
    assert bus.store.datasets[("churn", "v1")].sha256 == "1" * 64  # type: ignore[attr-defined]


async def test_a_version_is_evaluating_once_registered_then_takes_its_evaluations_decision() -> None:
    bus = memory_bus()
    event = await registered(bus, "run-1")
    await bus.handle(event)
    assert await status(bus, 1) == "evaluating"
    await bus.handle(evaluated(1, "rejected", failed="min_accuracy"))
    found = await bus.store.get_version(MODEL, 1)  # type: ignore[attr-defined]
    assert (found.status, found.status_reason) == ("rejected", "evaluation: rejected (failed gates: min_accuracy)")


async def test_an_evaluation_of_a_version_never_registered_is_refused() -> None:
    bus = memory_bus()
    with pytest.raises(domain.NotFound):
        await bus.handle(evaluated(7, "approved"))


async def test_a_canary_is_the_challenger_and_its_promotion_moves_the_champion_and_retires_the_old_one() -> None:
    bus = memory_bus()
    await registered(bus, "run-1")
    await serving(bus, 1, None)
    await registered(bus, "run-2")
    await bus.handle(evaluated(2, "approved"))
    await bus.handle(rollout(2, 1, "canary"))
    assert await bus.store.aliases_of(MODEL) == {"champion": 1, "challenger": 2}  # type: ignore[attr-defined]
    await bus.handle(rollout(2, 1, "promoted"))
    assert await bus.store.aliases_of(MODEL) == {"champion": 2}  # type: ignore[attr-defined]
    assert (await status(bus, 1), await status(bus, 2)) == ("retired", "serving")


async def test_a_rollback_puts_the_champion_back_and_rejects_the_candidate() -> None:
    bus = memory_bus()
    await registered(bus, "run-1")
    await serving(bus, 1, None)
    await registered(bus, "run-2")
    await bus.handle(evaluated(2, "approved"))
    await bus.handle(rollout(2, 1, "canary"))
    await bus.handle(rollout(2, 1, "rolled-back"))
    assert await bus.store.aliases_of(MODEL) == {"champion": 1}  # type: ignore[attr-defined]
    assert (await status(bus, 1), await status(bus, 2)) == ("serving", "rejected")


async def test_a_late_evaluation_of_a_serving_version_leaves_its_status_alone() -> None:
    bus = memory_bus()
    await registered(bus, "run-1")
    await serving(bus, 1, None)
    await bus.handle(evaluated(1, "approved"), event_id="late")
    assert await status(bus, 1) == "serving"


async def test_drift_and_training_failures_land_in_the_models_history() -> None:
    bus = memory_bus()
    await bus.handle(example(DriftDetected, model=MODEL, version=1), event_id="drift-1")
    await bus.handle(example(TrainingFailed, model=MODEL, run_id="run-9", stage="validate"), event_id="fail-1")
    kinds = [(item.kind, item.event_id) for item in bus.store.history_of(MODEL)]  # type: ignore[attr-defined]
    assert kinds == [("DriftDetected", "drift-1"), ("TrainingFailed", "fail-1")]
    assert bus.store.runs["run-9"]["status"] == "failed"  # type: ignore[attr-defined]


async def test_a_platform_alert_is_kept_in_no_models_history() -> None:
    bus = memory_bus()
    await bus.handle(example(AlertRaised, model="-"))
    assert bus.store.history == {}  # type: ignore[attr-defined]
