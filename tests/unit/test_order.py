"""Order does not change the outcome: each service's handlers are fed, through the in-memory unit
of work, random interleavings of one scenario's events across topics (Kafka keeps the order within
a topic's partition, which is what a model's events share, and no order across topics) and must
end in the state the in-order delivery reaches.

A Hypothesis state machine: each step delivers the next event of a topic it draws; at the end the
rest is delivered and the state is compared with the in-order run's. The case budget and seed are
fixed (CI runs the same cases every time).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from services.alerter import app as alerter_app
from services.alerter.config import AlerterConfig
from services.alerter.memory import MemoryStore as AlerterMemory
from services.deployer import app as deployer_app
from services.deployer.memory import MemoryStore as DeployerMemory
from services.evaluator import app as evaluator_app
from services.evaluator.memory import MemoryStore as EvaluatorMemory
from services.monitor import app as monitor_app
from services.monitor.memory import MemoryStore
from services.registry import app as registry_app
from services.registry.memory import MemoryStore as RegistryMemory
from services.trainer import app as trainer_app
from services.trainer.memory import MemoryStore as TrainerMemory
from shared.contract.events import (
    ArtifactRef,
    DataArrived,
    DriftDetected,
    Event,
    Label,
    LabelsArrived,
    ModelEvaluated,
    ModelRegistered,
    ModelTrained,
    Prediction,
    PredictionsLogged,
    RolloutChanged,
    TrafficShare,
    TrainingFailed,
)
from shared.runtime.memory import InMemoryBus
from tests.support.examples import example
from tests.support.judges import FakeJudge
from tests.support.specs import example_spec, spec_applied

CASES = settings(max_examples=150, stateful_step_count=40, deadline=None, derandomize=True, database=None)


@dataclass(frozen=True)
class Scenario:
    """A service's handlers, one scenario's events by topic (each topic in its own order), and what
    of the service's state must not depend on the order."""

    bus: Callable[[], InMemoryBus[Any]]
    topics: dict[str, Sequence[Event]]
    state: Callable[[InMemoryBus[Any]], Awaitable[dict[str, Any]]]
    # Causality: an event that can only exist once the service has handled another (the registry
    # numbers a version before anybody evaluates it) is delivered after that one.
    after: dict[int, Event] = field(default_factory=dict)  # id(event) -> the event it needs first

    def ready(self, event: Event, delivered: set[int]) -> bool:
        needed = self.after.get(id(event))
        return needed is None or id(needed) in delivered


def run(loop: asyncio.AbstractEventLoop, bus: InMemoryBus[Any], event: Event) -> None:
    loop.run_until_complete(bus.handle(event, event_id=f"{event.event_type}-{id(event)}"))


def in_order(scenario: Scenario) -> Any:
    """The state after every topic's events, topic after topic in the order they are listed (an
    event that needs another waits for it)."""
    loop = asyncio.new_event_loop()
    try:
        bus = scenario.bus()
        pending = {topic: list(events) for topic, events in scenario.topics.items()}
        done: set[int] = set()
        while ready := [t for t, events in pending.items() if events and scenario.ready(events[0], done)]:
            event = pending[ready[0]].pop(0)
            run(loop, bus, event)
            done.add(id(event))
        return loop.run_until_complete(scenario.state(bus))
    finally:
        loop.close()


def machine(scenario: Scenario) -> type[RuleBasedStateMachine]:
    """A state machine delivering the scenario's topics in an order it draws."""
    expected = in_order(scenario)

    class Interleaved(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.bus = scenario.bus()
            self.pending = {topic: list(events) for topic, events in scenario.topics.items()}
            self.delivered: list[str] = []
            self.done: set[int] = set()

        def ready(self) -> list[str]:
            return [t for t, events in self.pending.items() if events and scenario.ready(events[0], self.done)]

        def deliver(self, topic: str) -> None:
            event = self.pending[topic].pop(0)
            run(self.loop, self.bus, event)
            self.done.add(id(event))

        @rule(data=st.data())
        def deliver_next_of_a_topic(self, data: st.DataObject) -> None:
            ready = self.ready()
            if not ready:
                return
            topic = data.draw(st.sampled_from(ready), label="topic")
            self.delivered.append(topic)
            self.deliver(topic)

        def teardown(self) -> None:
            try:
                while ready := self.ready():
                    self.deliver(ready[0])
                found = self.loop.run_until_complete(scenario.state(self.bus))
                assert found == expected, differences(self.delivered, found, expected)
            finally:
                self.loop.close()

    Interleaved.TestCase.settings = CASES
    return Interleaved


def differences(delivered: list[str], found: dict[str, Any], expected: dict[str, Any]) -> str:
    """What differs from the in-order state, readably."""
    lines = [f"first delivered: {', '.join(delivered) or 'nothing'}, then the rest in order"]
    for key in sorted(expected):
        if found.get(key) != expected[key]:
            lines.append(f"{key}: {found.get(key)!r}\n  in order: {expected[key]!r}")
    return "\n".join(lines)


# ---------------------------------------------------------------- monitor


SPEC = example_spec("order-churn")
MODEL = SPEC.model
FEATURES = [f.name for f in SPEC.features]
SERVED = datetime(2026, 12, 1, 12, tzinfo=UTC)


def answers(batch: int, size: int, *, role: str = "stable", version: int = 1) -> PredictionsLogged:
    """One serving batch's log: request ids `r-<batch>-<i>`."""
    records = [
        Prediction(
            request_id=f"r-{batch}-{i}",
            model_version=version,
            role=role,  # type: ignore[arg-type]
            features={name: 1.0 for name in FEATURES},
            prediction=i % 2,
            probabilities={"0": 0.3, "1": 0.7} if i % 2 else {"0": 0.7, "1": 0.3},
            latency_ms=1.0,
            served_at=SERVED + timedelta(seconds=batch, milliseconds=i),
        )
        for i in range(size)
    ]
    return PredictionsLogged.from_records(MODEL, f"log-{batch}-{role}", records)


def labels(ids: Sequence[str]) -> LabelsArrived:
    return LabelsArrived(
        model=MODEL, labels=[Label(request_id=r, label=int(r[-1]) % 2, observed_at=SERVED) for r in ids]
    )


@functools.cache
def monitor_scenario() -> Scenario:
    """Three serving batches (the last one also answered by a shadow version) and labels for most
    of their answers, in three events: one labels a request twice, one names requests never served."""
    trained = example(ModelTrained, model=MODEL, run_id="run-1", metrics={"accuracy": 0.9})
    live = example(
        RolloutChanged,
        model=MODEL,
        rollout_id="ro-1",
        to_state="shadow",
        candidate_version=2,
        stable_version=1,
        traffic=[TrafficShare(version=1, percent=100, role="stable")],
    )
    ids = [f"r-{b}-{i}" for b in range(3) for i in range(20)]
    return Scenario(
        bus=lambda: monitor_app.in_memory(memory=MemoryStore(), label_horizon=timedelta(days=3650)),
        topics={
            "model-spec-applied": [spec_applied(spec=SPEC)],
            "model-trained": [trained],
            "model-registered": [example(ModelRegistered, model=MODEL, version=1, run_id="run-1")],
            "rollout-changed": [live],
            "predictions-logged": [
                answers(0, 20),
                answers(1, 20),
                answers(2, 20),
                answers(2, 20, role="shadow", version=2),
            ],
            "labels-arrived": [
                labels(ids[:25]),
                labels([*ids[25:45], ids[3]]),
                labels([*ids[45:55], "never-served-1", "never-served-2"]),
            ],
        },
        state=monitor_state,
    )


async def monitor_state(bus: InMemoryBus[MemoryStore]) -> dict[str, Any]:
    """How many answers carry a label (and which labels), and the model's ledger."""
    store = bus.store
    labelled = sorted((a.request_id, a.role, a.label) for a in store.served if a.label is not None)
    ledger = await store.ledger(MODEL)
    return {"answers labelled": len(labelled), "labels on answers": labelled, "ledger": ledger.as_dict()}


TestMonitorOrder = machine(monitor_scenario()).TestCase


# ---------------------------------------------------------------- registry


def _rollout(candidate: int, stable: int | None, from_state: str, to_state: str) -> RolloutChanged:
    return example(
        RolloutChanged,
        model=MODEL,
        rollout_id=f"ro-{candidate}",
        candidate_version=candidate,
        stable_version=stable,
        from_state=from_state,
        to_state=to_state,
        traffic=[TrafficShare(version=candidate, percent=100, role="stable")],
        reason="order test",
    )


@functools.cache
def registry_scenario() -> Scenario:
    """Two versions trained, registered, evaluated and rolled out (v1 promoted; v2 through a canary
    to promotion, retiring v1), with drift and an alert in the history."""
    trained = [example(ModelTrained, model=MODEL, run_id=f"run-{n}") for n in (1, 2)]
    registered = [example(ModelRegistered, model=MODEL, version=n, run_id=f"run-{n}") for n in (1, 2)]
    evaluated = [example(ModelEvaluated, model=MODEL, version=n, decision="approved", passed=True) for n in (1, 2)]
    rollouts = [
        _rollout(1, None, "pending", "promoted"),
        _rollout(2, 1, "pending", "canary"),
        _rollout(2, 1, "canary", "promoted"),
    ]
    drift = example(DriftDetected, model=MODEL, version=1)
    after = {id(r): trained[n] for n, r in enumerate(registered)}
    after |= {id(e): trained[n] for n, e in enumerate(evaluated)}
    after |= {id(rollouts[0]): trained[0], id(rollouts[1]): trained[1], id(drift): trained[0]}
    return Scenario(
        bus=lambda: registry_app.in_memory(),
        topics={
            "model-trained": trained,
            "model-registered": registered,
            "model-evaluated": evaluated,
            "rollout-changed": rollouts,
            "drift-detected": [drift],
        },
        state=registry_state,
        after=after,
    )


async def registry_state(bus: InMemoryBus[RegistryMemory]) -> dict[str, Any]:
    """Each version's status, the aliases, what the history holds."""
    store = bus.store
    return {
        "statuses": {v: m.status for (_, v), m in sorted(store.versions.items())},
        "aliases": dict(sorted(store.aliases.get(MODEL, {}).items())),
        "evaluations": len(store.evaluations),
        "rollouts": len(store.rollouts),
        "history entries": len(store.history),
    }


TestRegistryOrder = machine(registry_scenario()).TestCase


# ---------------------------------------------------------------- trainer, evaluator, deployer


@functools.cache
def trainer_scenario() -> Scenario:
    """The model's spec and its dataset's first version: one run, on that version."""
    data = example(DataArrived, dataset=SPEC.dataset, version="d1", producer="order-test")
    return Scenario(
        bus=lambda: trainer_app.in_memory(memory=TrainerMemory()),
        topics={"model-spec-applied": [spec_applied(spec=SPEC)], "data-arrived": [data]},
        state=trainer_state,
    )


async def trainer_state(bus: InMemoryBus[TrainerMemory]) -> dict[str, Any]:
    jobs = sorted((j.model, j.dataset, j.version, j.trigger) for j in bus.store.jobs.values())
    return {"runs queued": jobs, "datasets": sorted(bus.store.datasets)}


def _registered(version: int, champion: int | None) -> ModelRegistered:
    artifacts = [
        ArtifactRef(name=name, uri=f"s3://b/{MODEL}/v{version}/{name}", sha256=f"{version:064x}", size_bytes=10)
        for name in ("model.skops", "test-split.parquet")
    ]
    return example(
        ModelRegistered,
        model=MODEL,
        version=version,
        run_id=f"run-{version}",
        artifacts=artifacts,
        champion_version=champion,
    )


@functools.cache
def evaluator_scenario() -> Scenario:
    """Two registrations, the second against the first as champion, and the spec."""
    return Scenario(
        bus=lambda: evaluator_app.in_memory(FakeJudge(), EvaluatorMemory()),
        topics={
            "model-spec-applied": [spec_applied(spec=SPEC)],
            "model-registered": [_registered(1, None), _registered(2, 1)],
        },
        state=evaluator_state,
    )


async def evaluator_state(bus: InMemoryBus[EvaluatorMemory]) -> dict[str, Any]:
    results = sorted((v, r.decision, r.champion_version) for (_, v), r in bus.store.results.items())
    return {"results": results, "parked": sorted(bus.store.parked)}


@functools.cache
def deployer_scenario() -> Scenario:
    """A version registered and approved, and the model's spec: one rollout of it."""
    approved = example(ModelEvaluated, model=MODEL, version=1, decision="approved", passed=True)
    return Scenario(
        bus=lambda: deployer_app.in_memory(memory=DeployerMemory()),
        topics={
            "model-spec-applied": [spec_applied(spec=SPEC)],
            "model-registered": [_registered(1, None)],
            "model-evaluated": [approved],
        },
        state=deployer_state,
    )


async def deployer_state(bus: InMemoryBus[DeployerMemory]) -> dict[str, Any]:
    store = bus.store
    return {
        "rollouts": sorted((r.candidate, r.state) for r in store.rollouts.values()),
        "champions": {m: s.champion for m, s in store.models.items()},
        "versions": {f"{m}@{v}": (len(k.artifacts), k.approved) for (m, v), k in sorted(store.versions.items())},
    }


# ---------------------------------------------------------------- alerter


@functools.cache
def alerter_scenario() -> Scenario:
    """A failed run resolved by a later successful one; drift of v1 resolved by v2's promotion;
    drift of v2 afterwards, which stays firing. Each topic's events happen in this order in time."""

    def at(minute: int) -> dict[str, Any]:
        return {"occurred_at": SERVED + timedelta(minutes=minute)}

    failed = example(TrainingFailed, model=MODEL, run_id="run-a").model_copy(update=at(0))
    drift_v1 = example(DriftDetected, model=MODEL, version=1).model_copy(update=at(1))
    trained = example(ModelTrained, model=MODEL, run_id="run-b").model_copy(update=at(2))
    promoted = _rollout(2, 1, "canary", "promoted").model_copy(update=at(3))
    drift_v2 = example(DriftDetected, model=MODEL, version=2).model_copy(update=at(4))
    return Scenario(
        bus=lambda: alerter_app.in_memory(AlerterConfig(), memory=AlerterMemory()),
        topics={
            "training-failed": [failed],
            "drift-detected": [drift_v1, drift_v2],
            "model-trained": [trained],
            "rollout-changed": [promoted],
        },
        state=alerter_state,
    )


async def alerter_state(bus: InMemoryBus[AlerterMemory]) -> dict[str, Any]:
    firing = sorted(
        (a.labels.get("kind", ""), a.labels.get("version", ""))
        for a in bus.store.alerts.values()
        if a.status == "firing"
    )
    return {"firing": firing}


TestTrainerOrder = machine(trainer_scenario()).TestCase
TestEvaluatorOrder = machine(evaluator_scenario()).TestCase
TestDeployerOrder = machine(deployer_scenario()).TestCase
TestAlerterOrder = machine(alerter_scenario()).TestCase
