"""The evaluator's handlers: a registration is judged against the champion as soon as its model's
spec is known; a spec that arrives late releases the registrations that waited for it."""

from __future__ import annotations

import logging
import time

from services.evaluator.judge import Judging
from services.evaluator.store import EvaluatorStore
from shared.contract.events import Event, ModelEvaluated, ModelRegistered, ModelSpecApplied
from shared.contract.spec import ModelSpec
from shared.runtime.specwait import release, with_spec
from shared.runtime.uow import UnitOfWork

log = logging.getLogger("modelbus.evaluator")
UoW = UnitOfWork[EvaluatorStore]


async def evaluate(store: EvaluatorStore, judge: Judging, spec: ModelSpec, event: ModelRegistered) -> ModelEvaluated:
    """Judge a version (against the champion when there is one) and keep the result."""
    champion = None
    if event.champion_version is not None and event.champion_version != event.version:
        champion = await store.artifacts_of(event.model, event.champion_version)
    began = time.perf_counter()
    verdict = await judge.verdict(spec, event, champion)
    seconds = time.perf_counter() - began
    evaluated = ModelEvaluated(
        model=event.model,
        version=event.version,
        champion_version=event.champion_version if champion is not None else None,
        passed=verdict.passed,
        decision=verdict.decision,
        gates=verdict.gates,
        metrics=verdict.metrics,
        champion_metrics=verdict.champion_metrics,
        test_rows=verdict.test_rows,
        evaluation_seconds=round(seconds, 4),
    )
    await store.keep_result(evaluated, seconds=seconds)
    failed = [g.name for g in verdict.gates if not g.passed]
    log.info(
        "%s@%d %s in %.2f s%s",
        event.model,
        event.version,
        verdict.decision,
        seconds,
        f" (failed: {', '.join(failed)})" if failed else "",
    )
    return evaluated


async def on_spec(event: ModelSpecApplied, uow: UoW, *, judge: Judging) -> list[Event]:
    """Keep the newest spec; judge the registrations that waited for it."""
    if not await uow.store.keep_spec(event):
        uow.drop(f"spec revision {event.revision} of {event.model} is not newer than the one in force")
        return []

    async def judged(spec: ModelSpec, registered: ModelRegistered) -> list[Event]:
        return [await evaluate(uow.store, judge, spec, registered)]

    return await release(uow.store, event.model, event.spec, judged)


async def on_registered(event: ModelRegistered, uow: UoW, *, judge: Judging) -> list[Event]:
    """Judge a new version once (a redelivery finds its result), or park it until its spec arrives."""
    await uow.store.keep_version(event)
    if await uow.store.result_of(event.model, event.version) is not None:
        return []

    async def judged(spec: ModelSpec, registered: ModelRegistered) -> list[Event]:
        return [await evaluate(uow.store, judge, spec, registered)]

    return await with_spec(uow.store, event.model, event, judged, what=f"registration of version {event.version}")
