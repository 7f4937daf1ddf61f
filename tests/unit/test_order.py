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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from services.monitor import app as monitor_app
from services.monitor.memory import MemoryStore
from shared.contract.events import (
    Event,
    Label,
    LabelsArrived,
    ModelRegistered,
    ModelTrained,
    Prediction,
    PredictionsLogged,
    RolloutChanged,
    TrafficShare,
)
from shared.runtime.memory import InMemoryBus
from tests.support.examples import example
from tests.support.specs import example_spec, spec_applied

CASES = settings(max_examples=150, stateful_step_count=40, deadline=None, derandomize=True, database=None)


@dataclass(frozen=True)
class Scenario:
    """A service's handlers, one scenario's events by topic (each topic in its own order), and what
    of the service's state must not depend on the order."""

    bus: Callable[[], InMemoryBus[Any]]
    topics: dict[str, Sequence[Event]]
    state: Callable[[InMemoryBus[Any]], Awaitable[dict[str, Any]]]


def run(loop: asyncio.AbstractEventLoop, bus: InMemoryBus[Any], event: Event) -> None:
    loop.run_until_complete(bus.handle(event, event_id=f"{event.event_type}-{id(event)}"))


def in_order(scenario: Scenario) -> Any:
    """The state after every topic's events, topic after topic in the order they are listed."""
    loop = asyncio.new_event_loop()
    try:
        bus = scenario.bus()
        for events in scenario.topics.values():
            for event in events:
                run(loop, bus, event)
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

        @rule(data=st.data())
        def deliver_next_of_a_topic(self, data: st.DataObject) -> None:
            ready = sorted(topic for topic, events in self.pending.items() if events)
            if not ready:
                return
            topic = data.draw(st.sampled_from(ready), label="topic")
            event = self.pending[topic].pop(0)
            self.delivered.append(f"{topic}:{event.event_type}")
            run(self.loop, self.bus, event)

        def teardown(self) -> None:
            try:
                for events in self.pending.values():
                    while events:
                        run(self.loop, self.bus, events.pop(0))
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
