"""The deployer's handlers: approved versions start rollouts, the monitor's verdicts move them,
operators steer them. Each decision locks its model, so replicas never interleave two.

A command that makes no sense is refused: the refusal is written to the command log apart (in a
transaction of its own), and the command is dead-lettered with the reason; nothing of it is applied.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from services.deployer import domain
from services.deployer.domain import DeployerRefusal, Transition, announce
from services.deployer.store import Command, DeployerStore
from shared.contract.events import (
    CanaryAnalyzed,
    Event,
    ModelEvaluated,
    ModelRegistered,
    ModelSpecApplied,
    RolloutChanged,
    RolloutCommanded,
)
from shared.contract.spec import ModelSpec
from shared.contract.spec import Rollout as RolloutPolicy
from shared.runtime.errors import Refused
from shared.runtime.specwait import release, with_spec
from shared.runtime.uow import UnitOfWork

log = logging.getLogger("modelbus.deployer")
Clock = Callable[[], datetime]
UoW = UnitOfWork[DeployerStore]


def utcnow() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


async def policy_of(store: DeployerStore, model: str) -> RolloutPolicy:
    """The model's rollout policy (the default one before its spec is known)."""
    spec = await store.spec_of(model)
    return spec.rollout if spec is not None else RolloutPolicy()


async def begin(
    store: DeployerStore,
    model: str,
    version: int,
    now: datetime,
    *,
    actor: str = "deployer",
    reason: str = "",
    allow_older: bool = False,
    traceparent: str | None = None,
) -> list[Transition]:
    """Roll out `version`: supersede a running rollout of an older version, then start."""
    state = await store.lock(model)
    running = await store.current(state)
    if not domain.admits(state, running, version, actor=actor, allow_older=allow_older):
        log.info(
            "%s@%d approved, but it is rolling out, serving or older than the newest; nothing to do", model, version
        )
        return []
    moves: list[Transition] = []
    if running is not None and running.live:
        moves.append(domain.supersede(running, now, newer=version))
        state = await keep(store, state, moves[-1].rollout)
    rollout_id = f"ro-{uuid.uuid4().hex[:12]}"
    started = domain.start(model, rollout_id, version, state.champion, await policy_of(store, model), now)
    if actor != "deployer":
        started = Transition(started.rollout, started.from_state, reason or started.reason, actor=actor)
    moves.append(started)
    await keep(store, state, started.rollout, traceparent=traceparent)
    return moves


async def keep(
    store: DeployerStore, state: domain.ModelState, rollout: domain.Rollout, *, traceparent: str | None = None
) -> domain.ModelState:
    """Persist a rollout's new state and the model's that follows from it (returned)."""
    after = domain.after_save(state, rollout)
    await store.save(after, rollout, traceparent=traceparent)
    return after


async def in_lifecycle_trace(uow: UoW, moves: list[Transition]) -> None:
    """A rollout's later steps (the monitor's verdicts, operators' commands) belong to the trace of
    the lifecycle that started it, linked to what caused them."""
    if moves:
        rollout = moves[-1].rollout
        found = await uow.store.traceparent_of(rollout.rollout_id)
        uow.continue_trace(found, f"deployer {rollout.model} rollout {rollout.state}")


@dataclass(frozen=True)
class Approvals:
    """Approvals waiting for their model's spec: the versions' decisions are kept already (so
    parking keeps nothing more), and the newest approved version is what a spec releases."""

    store: DeployerStore

    async def spec_of(self, model: str) -> ModelSpec | None:
        """The spec in force for a model, if any."""
        return await self.store.spec_of(model)

    async def park(self, work: tuple[str, int]) -> None:
        """Nothing to keep: the approval is the version's recorded decision."""

    async def unpark(self, model: str) -> list[tuple[str, int]]:
        """The model's newest approved version, if any."""
        newest = await self.store.newest_approved(model)
        return [(model, newest)] if newest is not None else []


def rolling_out(uow: UoW, clock: Clock) -> Callable[[ModelSpec, tuple[str, int]], Awaitable[list[Event]]]:
    """What an approval does once its model's spec is known: a rollout starts."""

    async def start(spec: ModelSpec, work: tuple[str, int]) -> list[Event]:
        model, version = work
        moves = await begin(uow.store, model, version, clock(), traceparent=uow.current_traceparent())
        if not moves:
            uow.drop(f"approval of {model} v{version}, which is rolling out, serving, or older than the newest")
        return [announce(t) for t in moves]

    return start


async def on_spec(event: ModelSpecApplied, uow: UoW, *, clock: Clock) -> list[Event]:
    """Keep the rollout policy; an approval that arrived before the spec starts now."""
    if not await uow.store.keep_spec(event):
        uow.drop(f"spec revision {event.revision} of {event.model} is not newer than the one in force")
        return []
    return await release(Approvals(uow.store), event.model, event.spec, rolling_out(uow, clock))


async def on_registered(event: ModelRegistered, uow: UoW) -> None:
    """Keep the version's artifacts."""
    await uow.store.keep_version(event)


async def on_evaluated(event: ModelEvaluated, uow: UoW, *, clock: Clock) -> list[Event]:
    """An approved version starts a rollout (with its spec; until then it waits for it)."""
    approved = event.decision == "approved"
    await uow.store.decide(event.model, event.version, event.decision, approved=approved)
    if not approved:
        return []
    work = (event.model, event.version)
    return await with_spec(
        Approvals(uow.store), event.model, work, rolling_out(uow, clock), what=f"approval of version {event.version}"
    )


async def on_analysis(event: CanaryAnalyzed, uow: UoW, *, clock: Clock) -> list[RolloutChanged]:
    """Advance, hold or roll back the running canary on the monitor's evidence."""
    state = await uow.store.lock(event.model)
    running = await uow.store.current(state)
    if running is None or running.rollout_id != event.rollout_id or not running.live:
        if not await uow.store.knows_rollout(event.model, event.rollout_id):
            raise Refused(f"analysis of {event.model} rollout {event.rollout_id}, which the deployer never started")
        now = f"{running.rollout_id} is {running.state}" if running is not None else "no rollout runs"
        uow.drop(f"analysis of {event.rollout_id}, which has ended ({now})")
        return []
    policy = await policy_of(uow.store, event.model)
    verdict = domain.enough_samples(event.verdict, event.candidate_samples, policy.min_samples)
    if verdict != event.verdict:
        log.info(
            "%s: advance asked on %d canary samples, %d needed; holding",
            event.model,
            event.candidate_samples,
            policy.min_samples,
        )
    moved = domain.on_analysis(
        running,
        verdict,
        clock(),
        bake_seconds=policy.bake_seconds,
        reason=event.reason,
        evidence=domain.evidence_of(event),
    )
    if moved is None:
        return []
    await keep(uow.store, state, moved.rollout)
    await in_lifecycle_trace(uow, [moved])
    return [announce(moved)]


async def commanded(
    store: DeployerStore, event: RolloutCommanded, now: datetime, traceparent: str | None
) -> list[Transition]:
    """Carry out an operator's command, or raise DeployerRefusal saying why not."""
    if event.command in ("approve", "start"):
        if event.version is None:
            raise DeployerRefusal(f"{event.command} needs a version")
        domain.startable(event.model, event.version, await store.version_of(event.model, event.version), event.command)
        if event.command == "approve":
            await store.decide(event.model, event.version, "held-for-review", approved=True)
        return await begin(
            store,
            event.model,
            event.version,
            now,
            actor=event.actor,
            reason=event.reason or f"{event.command} by {event.actor}",
            allow_older=event.command == "start",
            traceparent=traceparent,
        )
    state = await store.lock(event.model)
    running = await store.current(state)
    if running is None:
        raise DeployerRefusal(f"{event.model} has no rollout to {event.command}")
    try:
        match event.command:
            case "set-weights":
                if not event.traffic:
                    raise DeployerRefusal("set-weights needs a traffic split")
                moved = domain.set_weights(running, event.traffic, now, actor=event.actor, reason=event.reason)
            case "promote" | "pause" | "resume" | "rollback" as name:
                moved = domain.command(
                    running, name, now, actor=event.actor, version=event.version, reason=event.reason
                )
            case _:
                raise DeployerRefusal(f"unknown command {event.command!r}")
    except domain.Refused as exc:
        raise DeployerRefusal(str(exc)) from exc
    await keep(store, state, moved.rollout)
    return [moved]


async def on_command(event: RolloutCommanded, uow: UoW, *, clock: Clock) -> list[RolloutChanged]:
    """An operator's command, carried out and logged, or refused and logged apart."""

    def logged(outcome: str, reason: str) -> Command:
        return Command(uow.envelope.id, event.model, event.command, event.version, event.actor, outcome, reason)

    try:
        forged = domain.unaudited(event, await uow.store.audit_entry(event.audit_id) if event.audit_id else None)
        if forged:
            raise Refused(f"{event.command} of {event.model} in the name of {event.actor} refused: {forged}")
        moves = await commanded(uow.store, event, clock(), uow.current_traceparent())
    except (DeployerRefusal, Refused) as exc:
        refusal = logged("refused", str(exc))

        async def keep(store: DeployerStore) -> None:
            await store.log_command(refusal)

        # The handler's transaction is rolled back; the refusal is kept in a transaction of its own.
        await uow.apart(keep)
        log.warning("%s %s by %s refused: %s", event.model, event.command, event.actor, exc)
        raise
    await uow.store.log_command(logged("done", "; ".join(f"{t.from_state} → {t.rollout.state}" for t in moves)))
    if event.command not in ("approve", "start"):
        await in_lifecycle_trace(uow, moves)
    return [announce(t) for t in moves]
