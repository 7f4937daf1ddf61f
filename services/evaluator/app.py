"""Wiring of the evaluator: ModelRegistered in, ModelEvaluated out, every gate with its numbers.

A model's bytes are read only after their SHA-256 matches the registry's record, and loaded with
skops, which runs no code and refuses types outside scikit-learn, NumPy and SciPy.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.evaluator import domain, store
from shared.contract import topics
from shared.contract.events import ArtifactRef, ModelEvaluated, ModelRegistered, ModelSpecApplied
from shared.contract.spec import ModelSpec
from shared.runtime.artifacts import ArtifactError, ArtifactIntegrityError, ArtifactStore
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.features import prepare
from shared.runtime.modelfile import UntrustedArtifact, load_model
from shared.runtime.settings import Settings
from shared.runtime.telemetry import make_tracer_provider
from shared.runtime.uow import HandlerContext

log = logging.getLogger("modelbus.evaluator")
GROUP = "evaluator"
ROW_SAMPLES = 200
BATCH_ROWS = 1000
BATCH_SAMPLES = 20


class EvaluatorRefusal(ValueError):
    """A version the evaluator cannot judge (an artifact is missing)."""


def measure_latency(model: Any, x: pd.DataFrame) -> domain.Latency:
    """p99 of one-row predictions and of 1,000-row batch predictions, in milliseconds."""
    rows: list[float] = []
    for i in range(ROW_SAMPLES):
        one = x.iloc[[i % len(x)]]
        began = time.perf_counter()
        model.predict(one)
        rows.append((time.perf_counter() - began) * 1000)
    batch = x.sample(n=BATCH_ROWS, replace=len(x) < BATCH_ROWS, random_state=0)
    batches: list[float] = []
    for _ in range(BATCH_SAMPLES):
        began = time.perf_counter()
        model.predict(batch)
        batches.append((time.perf_counter() - began) * 1000)
    return domain.Latency(float(np.percentile(rows, 99)), float(np.percentile(batches, 99)))


def _artifact(artifacts: list[ArtifactRef], name: str) -> ArtifactRef:
    for artifact in artifacts:
        if artifact.name == name:
            return artifact
    raise EvaluatorRefusal(f"no {name} among the version's artifacts")


@dataclass
class Judge:
    """Reads artifacts safely and judges a version."""

    artifacts: ArtifactStore

    async def fetch(self, artifact: ArtifactRef, folder: Path) -> Path:
        """Download an artifact, checking its digest."""
        return await asyncio.to_thread(
            self.artifacts.get_file, artifact.uri, folder / artifact.name, sha256=artifact.sha256
        )

    async def verdict(
        self, spec: ModelSpec, event: ModelRegistered, champion: list[ArtifactRef] | None
    ) -> domain.Verdict:
        """Every gate for the version, or a rejection saying why it could not be judged."""
        with tempfile.TemporaryDirectory(prefix="modelbus-eval-") as name:
            folder = Path(name)
            try:
                model_file = await self.fetch(_artifact(event.artifacts, "model.skops"), folder)
                test_file = await self.fetch(_artifact(event.artifacts, "test-split.parquet"), folder)
                model = await asyncio.to_thread(load_model, model_file)
            except ArtifactIntegrityError as exc:
                return domain.rejected_for(f"checksum: {exc}")
            except UntrustedArtifact as exc:
                return domain.rejected_for(str(exc), "artifact_types")
            champion_model = None
            if champion is not None:
                try:
                    (folder / "champion").mkdir()
                    champion_file = await self.fetch(_artifact(champion, "model.skops"), folder / "champion")
                    champion_model = await asyncio.to_thread(load_model, champion_file)
                except (ArtifactError, UntrustedArtifact, EvaluatorRefusal) as exc:
                    log.warning("champion of %s unreadable (%s); judging without it", event.model, exc)
            test = pd.read_parquet(test_file)
            latency = await asyncio.to_thread(measure_latency, model, prepare(test, spec.features))
            return await asyncio.to_thread(domain.judge, spec, model, test, latency, champion=champion_model)


def register_consumers(bus: Bus, judge: Judge, *, group: str = GROUP) -> None:
    """Subscribe the evaluator to specs and registrations."""

    async def evaluate(session: AsyncSession, spec: ModelSpec, event: ModelRegistered) -> ModelEvaluated:
        champion = None
        if event.champion_version is not None and event.champion_version != event.version:
            champion = await store.artifacts_of(session, event.model, event.champion_version)
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
        await store.keep_result(session, evaluated, seconds=seconds)
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

    @bus.consumer(topics.MODEL_SPEC_APPLIED, group=group, events=[ModelSpecApplied])
    async def on_spec(event: ModelSpecApplied, ctx: HandlerContext) -> list[ModelEvaluated]:
        if not await store.specs.keep(ctx.session, event):
            return []
        parked = await store.unpark(ctx.session, event.model)
        if parked:
            log.info(
                "%s: spec revision %d arrived; judging %d parked version(s)",
                event.model,
                event.revision,
                len(parked),
            )
        return [await evaluate(ctx.session, event.spec, registered) for registered in parked]

    @bus.consumer(topics.MODEL_REGISTERED, group=group, events=[ModelRegistered])
    async def on_registered(event: ModelRegistered, ctx: HandlerContext) -> ModelEvaluated | None:
        await store.keep_version(ctx.session, event)
        if await store.result_of(ctx.session, event.model, event.version) is not None:
            return None
        spec = await store.specs.of(ctx.session, event.model)
        if spec is None:
            # Specs and registrations travel on different topics; one may overtake the other.
            await store.park(ctx.session, event)
            log.warning("%s@%d: no spec known yet; parked until it arrives", event.model, event.version)
            return None
        return await evaluate(ctx.session, spec, event)


@dataclass
class Evaluator:
    """One evaluator process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    metrics: CollectorRegistry

    async def start(self) -> None:
        """Start consuming."""
        await self.bus.start()

    async def stop(self) -> None:
        """Stop consuming; close the database."""
        await self.bus.stop()
        await self.engine.dispose()


def build(settings: Settings, *, group: str = GROUP) -> Evaluator:
    """The composition root of an evaluator process."""
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    metrics = CollectorRegistry()
    bus = Bus(settings, sessions=sessions, tracer_provider=make_tracer_provider(settings), registry=metrics)
    register_consumers(bus, Judge(ArtifactStore(settings)), group=group)
    return Evaluator(settings=settings, engine=engine, sessions=sessions, bus=bus, metrics=metrics)
