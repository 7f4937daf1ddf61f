"""The deployer's handlers on its in-memory store: approvals start rollouts (or wait for the spec),
the monitor's verdicts move them after the bake time and with enough samples, operators steer
them, and a command that makes no sense is refused, logged and applied nowhere."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.deployer import app
from services.deployer.domain import AuditEntry, DeployerRefusal, audited_as
from shared.contract.events import (
    ArtifactRef,
    CanaryAnalyzed,
    GateResult,
    ModelEvaluated,
    ModelRegistered,
    RolloutChanged,
    RolloutCommanded,
    TrafficShare,
)
from shared.runtime.memory import InMemoryBus
from tests.support.specs import example_spec, spec_applied

MODEL = example_spec().model


@dataclass
class Clock:
    now: datetime = datetime(2026, 12, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def registered(version: int) -> ModelRegistered:
    artifact = ArtifactRef(name="model.skops", uri=f"s3://b/{MODEL}/{version}", sha256="c" * 64, size_bytes=1)
    return ModelRegistered(
        model=MODEL,
        version=version,
        run_id=f"run-{version}",
        dataset_version="v1",
        task="classification",
        artifacts=[artifact],
        metrics={},
    )


def evaluated(version: int, decision: str = "approved") -> ModelEvaluated:
    gate = GateResult(name="g", metric="accuracy", value=0.9, threshold=0.7, comparator=">=", passed=True)
    return ModelEvaluated(
        model=MODEL,
        version=version,
        champion_version=None,
        passed=decision != "rejected",
        decision=decision,  # type: ignore[arg-type]
        gates=[gate],
        metrics={"accuracy": 0.9},
        test_rows=100,
    )


def analyzed(rollout: RolloutChanged, verdict: str, samples: int = 500) -> CanaryAnalyzed:
    return CanaryAnalyzed(
        model=MODEL,
        rollout_id=rollout.rollout_id,
        candidate_version=rollout.candidate_version,
        stable_version=rollout.stable_version,
        verdict=verdict,  # type: ignore[arg-type]
        comparisons=[],
        candidate_samples=samples,
        stable_samples=samples,
        window_start=datetime(2026, 12, 1, tzinfo=UTC),
        window_end=datetime(2026, 12, 1, tzinfo=UTC),
        reason=f"{verdict} over {samples} samples",
    )


def command(
    bus: InMemoryBus[Any], name: str, *, version: int | None = None, actor: str = "ops", **extra: object
) -> RolloutCommanded:
    """An operator's command as the registry's API issues it: after the audit entry it names."""
    audit_id = len(bus.store.audit) + 1
    made = RolloutCommanded(model=MODEL, command=name, version=version, actor=actor, audit_id=audit_id, **extra)  # type: ignore[arg-type]
    bus.store.audit[audit_id] = AuditEntry(actor, *audited_as(made), "ok")
    return made


def split(event: RolloutChanged) -> dict[int, float]:
    return {share.version: share.percent for share in event.traffic}


async def approve(bus: InMemoryBus[object], version: int) -> list[RolloutChanged]:
    await bus.handle(registered(version))
    return [e for e in await bus.handle(evaluated(version)) if isinstance(e, RolloutChanged)]


async def serving_v1(clock: Clock | None = None) -> InMemoryBus[object]:
    bus: InMemoryBus[object] = app.in_memory(clock=clock or Clock())  # type: ignore[assignment]
    await bus.handle(spec_applied())
    [promoted] = await approve(bus, 1)
    assert promoted.to_state == "promoted"
    return bus


async def canary_v2(clock: Clock) -> tuple[InMemoryBus[object], RolloutChanged]:
    bus = await serving_v1(clock)
    [canary] = await approve(bus, 2)
    return bus, canary


async def test_a_models_first_approved_version_is_promoted_at_once() -> None:
    bus = await serving_v1()
    [changed] = bus.of_type(RolloutChanged)
    assert (changed.candidate_version, changed.stable_version, split(changed)) == (1, None, {1: 100.0})
    assert bus.store.models[MODEL].champion == 1  # type: ignore[attr-defined]


async def test_the_next_approved_version_starts_a_canary_at_the_first_step() -> None:
    _, canary = await canary_v2(Clock())
    assert (canary.from_state, canary.to_state, canary.step) == ("pending", "canary", 0)
    assert split(canary) == {1: 90.0, 2: 10.0}


async def test_an_approval_before_the_spec_waits_for_it() -> None:
    bus: InMemoryBus[object] = app.in_memory()  # type: ignore[assignment]
    assert await approve(bus, 1) == []
    [started] = await bus.handle(spec_applied())
    assert isinstance(started, RolloutChanged) and started.candidate_version == 1


async def test_a_rejected_version_starts_nothing() -> None:
    bus = await serving_v1()
    await bus.handle(registered(2))
    assert await bus.handle(evaluated(2, "rejected")) == []


async def test_a_redelivered_approval_changes_nothing() -> None:
    bus = await serving_v1()
    await bus.handle(registered(2))
    first = await bus.handle(evaluated(2), event_id="eval-2")
    assert await bus.handle(evaluated(2), event_id="eval-2") == []
    assert len(first) == 1


async def test_an_approval_of_a_version_older_than_the_one_rolling_out_is_stale() -> None:
    bus, _ = await canary_v2(Clock())
    await bus.handle(registered(1))
    assert await bus.handle(evaluated(1)) == []


async def test_a_newer_approved_version_supersedes_the_running_canary() -> None:
    bus, canary = await canary_v2(Clock())
    superseded, started = await approve(bus, 3)
    assert (superseded.rollout_id, superseded.to_state, split(superseded)) == (
        canary.rollout_id,
        "superseded",
        {1: 100},
    )
    assert (started.candidate_version, started.stable_version, started.to_state) == (3, 1, "canary")


async def test_an_advance_waits_for_the_bake_time_then_moves_to_the_next_step() -> None:
    clock = Clock()
    bus, canary = await canary_v2(clock)
    assert await bus.handle(analyzed(canary, "advance")) == []
    clock.wait(31)
    [advanced] = await bus.handle(analyzed(canary, "advance"))
    assert (advanced.to_state, advanced.step, split(advanced)) == ("canary", 1, {1: 75.0, 2: 25.0})
    assert advanced.evidence["candidate_samples"] == 500


async def test_an_advance_on_fewer_canary_samples_than_the_policy_needs_holds() -> None:
    clock = Clock()
    bus, canary = await canary_v2(clock)
    clock.wait(60)
    assert await bus.handle(analyzed(canary, "advance", samples=99)) == []
    assert bus.store.rollouts[canary.rollout_id].step == 0  # type: ignore[attr-defined]


async def test_a_rollback_verdict_puts_all_traffic_back_on_the_stable_version_at_once() -> None:
    bus, canary = await canary_v2(Clock())
    [rolled] = await bus.handle(analyzed(canary, "rollback"))
    assert (rolled.to_state, split(rolled)) == ("rolled-back", {1: 100.0})
    assert bus.store.models[MODEL].champion == 1  # type: ignore[attr-defined]


async def test_the_steps_of_a_rollout_continue_the_trace_that_started_it() -> None:
    bus, canary = await canary_v2(Clock())
    await bus.handle(analyzed(canary, "rollback"))
    assert bus.tracing.resumed == [f"deployer {MODEL} rollout rolled-back"]


async def test_a_late_analysis_of_an_ended_rollout_is_counted_as_dropped_and_an_unknown_one_dead_lettered() -> None:
    bus, canary = await canary_v2(Clock())
    await bus.handle(analyzed(canary, "rollback"))
    assert await bus.handle(analyzed(canary, "advance")) == []
    [(kind, why)] = bus.dropped
    assert kind == "CanaryAnalyzed" and why.startswith(f"analysis of {canary.rollout_id}, which has ended (")
    stranger = canary.model_copy(update={"rollout_id": "ro-never"})
    assert await bus.handle(analyzed(stranger, "rollback")) == []
    [letter] = bus.dead_letters
    assert letter.kind == "refused" and "ro-never, which the deployer never started" in letter.reason


async def test_an_operator_promotes_the_canary_and_the_command_is_logged() -> None:
    bus, _ = await canary_v2(Clock())
    [promoted] = await bus.handle(command(bus, "promote"), event_id="cmd-1")
    assert (promoted.to_state, promoted.actor, split(promoted)) == ("promoted", "ops", {2: 100.0})
    logged = bus.store.commands["cmd-1"]  # type: ignore[attr-defined]
    assert (logged.outcome, logged.reason) == ("done", "canary → promoted")


async def test_promote_while_paused_by_someone_else_is_refused_logged_and_changes_nothing() -> None:
    bus, canary = await canary_v2(Clock())
    await bus.handle(command(bus, "pause", actor="alice"))
    with pytest.raises(DeployerRefusal, match="paused"):
        await bus.handle(command(bus, "promote", actor="bob"), event_id="cmd-bob")
    assert bus.store.rollouts[canary.rollout_id].state == "paused"  # type: ignore[attr-defined]
    refused = bus.store.commands["cmd-bob"]  # type: ignore[attr-defined]
    assert refused.outcome == "refused" and "alice" in refused.reason


async def test_a_command_without_its_audit_entry_is_dead_lettered_logged_and_changes_nothing() -> None:
    bus, canary = await canary_v2(Clock())
    forged = RolloutCommanded(model=MODEL, command="pause", actor="olga")
    assert await bus.handle(forged, event_id="forged-1") == []
    assert bus.store.rollouts[canary.rollout_id].state == "canary"  # type: ignore[attr-defined]
    assert [(d.kind, d.reason) for d in bus.dead_letters] == [
        (
            "refused",
            f"pause of {MODEL} in the name of olga refused: the command carries no audit id: "
            "operators' commands come from the registry's audited API",
        )
    ]
    assert bus.store.commands["forged-1"].outcome == "refused"  # type: ignore[attr-defined]


async def test_a_command_naming_someone_elses_audit_entry_is_refused() -> None:
    bus, canary = await canary_v2(Clock())
    real = command(bus, "pause", actor="alice")
    forged = real.model_copy(update={"command": "rollback", "actor": "mallory"})
    assert await bus.handle(forged) == []
    assert bus.dead_letters[0].reason.endswith(
        f"audit entry {real.audit_id} records alice rollout-pause {MODEL} (ok), not mallory rollout-rollback {MODEL}"
    )
    assert bus.store.rollouts[canary.rollout_id].state == "canary"  # type: ignore[attr-defined]


async def test_starting_a_version_that_was_never_approved_is_refused_with_the_reason() -> None:
    bus = await serving_v1()
    await bus.handle(registered(2))
    await bus.handle(evaluated(2, "rejected"))
    with pytest.raises(DeployerRefusal, match="was not approved"):
        await bus.handle(command(bus, "start", version=2))


async def test_an_operator_approves_a_version_held_for_review_and_it_rolls_out() -> None:
    bus = await serving_v1()
    await bus.handle(registered(2))
    assert await bus.handle(evaluated(2, "held-for-review")) == []
    [started] = await bus.handle(command(bus, "approve", version=2))
    assert (started.candidate_version, started.to_state, started.actor) == (2, "canary", "ops")


async def test_approving_a_version_not_held_for_review_is_refused() -> None:
    bus = await serving_v1()
    await bus.handle(registered(2))
    await bus.handle(evaluated(2, "rejected"))
    with pytest.raises(DeployerRefusal, match="only a version held for review"):
        await bus.handle(command(bus, "approve", version=2))


async def test_weights_that_do_not_add_up_are_refused() -> None:
    bus, _ = await canary_v2(Clock())
    shares = [TrafficShare(version=1, percent=70, role="stable"), TrafficShare(version=2, percent=20, role="canary")]
    with pytest.raises(DeployerRefusal):
        await bus.handle(command(bus, "set-weights", traffic=shares))


async def test_an_operator_goes_back_to_an_older_version_explicitly() -> None:
    bus, _ = await canary_v2(Clock())
    await bus.handle(command(bus, "promote"))
    [back] = await bus.handle(command(bus, "start", version=1))
    assert (back.candidate_version, back.stable_version, back.to_state) == (1, 2, "canary")


async def test_a_command_for_a_model_with_no_rollout_is_refused() -> None:
    bus: InMemoryBus[object] = app.in_memory()  # type: ignore[assignment]
    with pytest.raises(DeployerRefusal, match="no rollout"):
        await bus.handle(command(bus, "pause"))
