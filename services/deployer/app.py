"""The deployer's rollout controller: approved versions in, rollout transitions out.

It consumes specs (the rollout policy), registrations (artifacts), evaluations (approved versions
start rollouts), canary analyses (advance, hold, roll back) and operator commands; every
transition is persisted and announced as `RolloutChanged` in the same transaction. A model's row
is locked while it is decided on, so replicas never interleave two decisions for one model.

A command that makes no sense is refused: the refusal is written to the command log in its own
transaction, and the command is dead-lettered with the reason; nothing of it is applied.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.deployer import domain, store
from shared.contract import topics
from shared.contract.events import (
    CanaryAnalyzed,
    ModelEvaluated,
    ModelRegistered,
    ModelSpecApplied,
    RolloutChanged,
    RolloutCommanded,
)
from shared.contract.spec import Rollout as RolloutPolicy
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.settings import Settings
from shared.runtime.telemetry import make_tracer_provider
from shared.runtime.uow import HandlerContext

log = logging.getLogger("modelbus.deployer")
GROUP = "deployer"
Clock = Callable[[], datetime]


class DeployerRefusal(ValueError):
    """A command the deployer will not carry out; dead-lettered with the reason."""


def utcnow() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


def announce(transition: domain.Transition) -> RolloutChanged:
    """The event for one transition."""
    rollout = transition.rollout
    return RolloutChanged(
        model=rollout.model,
        rollout_id=rollout.rollout_id,
        candidate_version=rollout.candidate,
        stable_version=rollout.stable,
        from_state=transition.from_state,
        to_state=rollout.state,
        step=rollout.step,
        traffic=domain.traffic(rollout),
        reason=transition.reason,
        evidence=dict(transition.evidence or {}),
        actor=transition.actor,
    )


def evidence_of(event: CanaryAnalyzed) -> dict[str, float]:
    """The numbers behind a canary analysis, flattened for RolloutChanged."""
    numbers: dict[str, float] = {
        "candidate_samples": float(event.candidate_samples),
        "stable_samples": float(event.stable_samples),
    }
    for comparison in event.comparisons:
        for side in ("candidate", "stable"):
            value = getattr(comparison, side)
            if value is not None:
                numbers[f"{comparison.metric}_{side}"] = float(value)
        numbers[f"{comparison.metric}_threshold"] = comparison.threshold
    return numbers


@dataclass
class Controller:
    """Decisions on one model at a time, inside the caller's transaction."""

    clock: Clock = utcnow

    async def policy(self, session: AsyncSession, model: str) -> RolloutPolicy:
        spec = await store.specs.of(session, model)
        return spec.rollout if spec is not None else RolloutPolicy()

    async def begin(
        self,
        session: AsyncSession,
        model: str,
        version: int,
        *,
        actor: str = "deployer",
        reason: str = "",
        allow_older: bool = False,
        traceparent: str | None = None,
    ) -> list[domain.Transition]:
        """Roll out `version`: supersede a running rollout of an older version, then start.

        An approval of a version that is not newer than the one rolling out (or serving) is stale
        and changes nothing, unless an operator asked for that version (`allow_older`).
        """
        row = await store.lock_model(session, model)
        running = await store.current(session, row)
        live = running if running is not None and running.live else None
        if live is not None and live.candidate == version:
            if actor == "deployer":
                return []
            raise DeployerRefusal(f"version {version} is already rolling out ({live.state})")
        if version == row.champion and live is None:
            if actor == "deployer":
                return []
            raise DeployerRefusal(f"version {version} is already serving {model}")
        newest = max(v for v in (row.champion, running.candidate if running else None, 0) if v is not None)
        if version < newest and not allow_older:
            if actor == "deployer":
                log.info("%s@%d approved, but version %d is newer; nothing to do", model, version, newest)
                return []
            raise DeployerRefusal(f"version {version} is older than version {newest}; start it explicitly to go back")
        moves: list[domain.Transition] = []
        now = self.clock()
        if live is not None:
            moves.append(domain.supersede(live, now, newer=version))
            await store.save(session, row, moves[-1].rollout)
        policy = await self.policy(session, model)
        rollout_id = f"ro-{uuid.uuid4().hex[:12]}"
        started = domain.start(model, rollout_id, version, row.champion, policy, now)
        if actor != "deployer":
            started = domain.Transition(started.rollout, started.from_state, reason or started.reason, actor=actor)
        moves.append(started)
        await store.save(session, row, started.rollout, traceparent=traceparent)
        return moves

    async def analysed(self, session: AsyncSession, event: CanaryAnalyzed) -> list[domain.Transition]:
        """Advance, hold or roll back the running canary on the monitor's evidence."""
        row = await store.lock_model(session, event.model)
        running = await store.current(session, row)
        if running is None or running.rollout_id != event.rollout_id or not running.live:
            log.info("%s: analysis of %s, which is not the running rollout; ignored", event.model, event.rollout_id)
            return []
        policy = await self.policy(session, event.model)
        verdict = event.verdict
        if verdict == "advance" and event.candidate_samples < policy.min_samples:
            log.info(
                "%s: advance asked on %d canary samples, %d needed; holding",
                event.model,
                event.candidate_samples,
                policy.min_samples,
            )
            verdict = "hold"
        moved = domain.on_analysis(
            running,
            verdict,
            self.clock(),
            bake_seconds=policy.bake_seconds,
            reason=event.reason,
            evidence=evidence_of(event),
        )
        if moved is None:
            return []
        await store.save(session, row, moved.rollout)
        return [moved]

    async def commanded(
        self, session: AsyncSession, event: RolloutCommanded, *, traceparent: str | None = None
    ) -> list[domain.Transition]:
        """Carry out an operator's command, or raise DeployerRefusal saying why not."""
        if event.command in ("approve", "start"):
            return await self._start(session, event, traceparent)
        row = await store.lock_model(session, event.model)
        running = await store.current(session, row)
        if running is None:
            raise DeployerRefusal(f"{event.model} has no rollout to {event.command}")
        now = self.clock()
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
        await store.save(session, row, moved.rollout)
        return [moved]

    async def _start(
        self, session: AsyncSession, event: RolloutCommanded, traceparent: str | None
    ) -> list[domain.Transition]:
        if event.version is None:
            raise DeployerRefusal(f"{event.command} needs a version")
        known = await store.version_of(session, event.model, event.version)
        if known is None or not known.artifacts:
            raise DeployerRefusal(f"{event.model}@{event.version} is not a registered version known to the deployer")
        if event.command == "approve":
            if known.decision != "held-for-review":
                raise DeployerRefusal(
                    f"{event.model}@{event.version} is {known.decision or 'not evaluated'}; "
                    "only a version held for review is approved"
                )
            await store.decide(session, event.model, event.version, "held-for-review", approved=True)
        elif not known.approved:
            raise DeployerRefusal(
                f"{event.model}@{event.version} was not approved ({known.decision or 'not evaluated'}); "
                "it cannot be rolled out"
            )
        reason = event.reason or f"{event.command} by {event.actor}"
        return await self.begin(
            session,
            event.model,
            event.version,
            actor=event.actor,
            reason=reason,
            allow_older=event.command == "start",
            traceparent=traceparent,
        )


def register_consumers(
    bus: Bus, sessions: async_sessionmaker[AsyncSession], *, group: str = GROUP, clock: Clock = utcnow
) -> None:
    """Subscribe the deployer to specs, registrations, evaluations, analyses and commands."""
    control = Controller(clock)

    @bus.consumer(topics.MODEL_SPEC_APPLIED, group=group, events=[ModelSpecApplied])
    async def on_spec(event: ModelSpecApplied, ctx: HandlerContext) -> list[RolloutChanged]:
        if not await store.specs.keep(ctx.session, event):
            return []
        # An approval that overtook the spec waited for it; start it now.
        approved = await store.newest_approved(ctx.session, event.model)
        if approved is None:
            return []
        moves = await control.begin(ctx.session, event.model, approved, traceparent=ctx.current_traceparent())
        return [announce(t) for t in moves]

    @bus.consumer(topics.MODEL_REGISTERED, group=group, events=[ModelRegistered])
    async def on_registered(event: ModelRegistered, ctx: HandlerContext) -> None:
        await store.keep_version(ctx.session, event)

    @bus.consumer(topics.MODEL_EVALUATED, group=group, events=[ModelEvaluated])
    async def on_evaluated(event: ModelEvaluated, ctx: HandlerContext) -> list[RolloutChanged]:
        approved = event.decision == "approved"
        await store.decide(ctx.session, event.model, event.version, event.decision, approved=approved)
        if not approved:
            return []
        if await store.specs.of(ctx.session, event.model) is None:
            log.warning("%s@%d approved before its spec arrived; starts with the spec", event.model, event.version)
            return []
        moves = await control.begin(ctx.session, event.model, event.version, traceparent=ctx.current_traceparent())
        return [announce(t) for t in moves]

    @bus.consumer(topics.CANARY_ANALYZED, group=group, events=[CanaryAnalyzed])
    async def on_analysis(event: CanaryAnalyzed, ctx: HandlerContext) -> list[RolloutChanged]:
        moves = await control.analysed(ctx.session, event)
        await _in_lifecycle_trace(ctx, moves)
        return [announce(t) for t in moves]

    @bus.consumer(topics.ROLLOUT_COMMANDED, group=group, events=[RolloutCommanded])
    async def on_command(event: RolloutCommanded, ctx: HandlerContext) -> list[RolloutChanged]:

        async def record(session: AsyncSession, outcome: str, reason: str) -> None:
            await store.log_command(
                session,
                event_id=ctx.envelope.id,
                model=event.model,
                command=event.command,
                version=event.version,
                actor=event.actor,
                outcome=outcome,
                reason=reason,
            )

        try:
            moves = await control.commanded(ctx.session, event, traceparent=ctx.current_traceparent())
        except DeployerRefusal as exc:
            # The handler's transaction is rolled back; the refusal is kept in a transaction of its own.
            async with sessions() as own, own.begin():
                await record(own, "refused", str(exc))
            log.warning("%s %s by %s refused: %s", event.model, event.command, event.actor, exc)
            raise
        await record(ctx.session, "done", "; ".join(f"{t.from_state} → {t.rollout.state}" for t in moves))
        if event.command not in ("approve", "start"):
            await _in_lifecycle_trace(ctx, moves)
        return [announce(t) for t in moves]


async def _in_lifecycle_trace(ctx: HandlerContext, moves: list[domain.Transition]) -> None:
    """A rollout's later steps (the monitor's verdicts, operators' commands) belong to the trace of
    the lifecycle that started it, linked to what caused them."""
    if moves:
        rollout = moves[-1].rollout
        found = await store.traceparent_of(ctx.session, rollout.rollout_id)
        ctx.continue_trace(found, f"deployer {rollout.model} rollout {rollout.state}")


@dataclass
class Deployer:
    """One deployer (rollout controller) process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    metrics: CollectorRegistry

    async def start(self) -> None:
        """Start consuming and relaying."""
        await self.bus.start()

    async def stop(self) -> None:
        """Stop consuming; close the database."""
        await self.bus.stop()
        await self.engine.dispose()


def build(settings: Settings, *, group: str = GROUP, clock: Clock = utcnow) -> Deployer:
    """The composition root of a deployer process."""
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    metrics = CollectorRegistry()
    bus = Bus(settings, sessions=sessions, tracer_provider=make_tracer_provider(settings), registry=metrics)
    register_consumers(bus, sessions, group=group, clock=clock)
    return Deployer(settings=settings, engine=engine, sessions=sessions, bus=bus, metrics=metrics)
