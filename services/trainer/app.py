"""Wiring of the trainer: consumers that queue training runs, and the worker that runs them.

A consumer never fits: it records the spec or dataset, queues a job and emits TrainingStarted in
one transaction, and its offset moves on. The worker claims jobs under a lease from PostgreSQL,
fits in a separate process (so the Kafka consumer keeps its heartbeat however long a fit takes),
uploads the artifacts and emits ModelTrained or TrainingFailed with the job's closing, in one
transaction. A trainer killed mid-fit leaves its job running with a lease that runs out; the next
trainer takes it over and runs it again, and the job closes once, so exactly one version results.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import multiprocessing
import tempfile
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.trainer import fit, store
from shared.contract import topics
from shared.contract.events import (
    ArtifactRef,
    CandidateResult,
    ContractViolation,
    DataArrived,
    Event,
    FeatureSchema,
    ModelSpecApplied,
    ModelTrained,
    ReferenceProfile,
    RetrainRequested,
    TrainingFailed,
    TrainingStarted,
)
from shared.runtime.artifacts import (
    ArtifactAccessDenied,
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactNotFound,
    ArtifactStore,
    ArtifactUnavailable,
    sha256_file,
)
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.errors import is_transient
from shared.runtime.settings import Settings
from shared.runtime.telemetry import configure_logging, make_tracer_provider
from shared.runtime.uow import HandlerContext

log = logging.getLogger("modelbus.trainer")
GROUP = "trainer"
IDLE_POLL_SECONDS = 0.25


class TrainerRefusal(ValueError):
    """A request the trainer cannot act on (no spec, no such dataset version); dead-lettered with why."""


def code_version() -> str:
    """The version of the code that trains."""
    try:
        return importlib.metadata.version("modelbus")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def run_id_for(model: str, cause_event_id: str) -> str:
    """One run per model and cause: a redelivered cause maps to the same run."""
    return f"run-{uuid.uuid5(uuid.NAMESPACE_URL, f'modelbus:{model}:{cause_event_id}').hex[:16]}"


async def _queue(
    ctx: HandlerContext,
    *,
    platform: str,
    model: str,
    revision: int,
    candidates: list[str],
    trigger: str,
    dataset: str,
    version: str,
) -> None:
    data = await ctx.session.get(store.DatasetRow, (dataset, version))
    run_id = run_id_for(model, ctx.envelope.id)
    traceparent = ctx.envelope.traceparent
    if trigger == "retrain-requested":  # a new lifecycle: its own trace, linked to what asked for it
        traceparent = ctx.start_trace(f"lifecycle {model} retrain") or traceparent
    await store.add_job(
        ctx.session,
        platform=platform,
        run_id=run_id,
        model=model,
        trigger=trigger,
        dataset=dataset,
        version=version,
        revision=revision,
        correlation_id=ctx.envelope.event.correlation_id,
        cause_event_id=ctx.envelope.id,
        traceparent=traceparent,
    )
    ctx.emit(
        TrainingStarted(
            model=model,
            run_id=run_id,
            trigger=trigger,
            dataset=dataset,
            dataset_version=version,
            data_sha256=data.sha256 if data else None,
            spec_revision=revision,
            candidates=candidates,
            code_version=code_version(),
        )
    )


def register_consumers(bus: Bus, *, group: str = GROUP) -> None:
    """Subscribe the trainer to specs, data arrivals and retrain requests."""

    @bus.consumer(topics.MODEL_SPEC_APPLIED, group=group, events=[ModelSpecApplied])
    async def on_spec(event: ModelSpecApplied, ctx: HandlerContext) -> None:
        changed = await store.specs.keep(ctx.session, event, dataset=event.spec.dataset)
        if not changed or await store.ever_trained(ctx.session, event.model):
            return
        # A model's first spec trains on data that arrived before it (specs and data travel on
        # different topics, so a trainer may well see the data first).
        version = await store.dataset_version(ctx.session, event.spec.dataset, None)
        if version is not None:
            await _queue(
                ctx,
                platform=bus.settings.topic_prefix,
                model=event.model,
                revision=event.revision,
                candidates=[c.estimator for c in event.spec.candidates],
                trigger="data-arrived",
                dataset=event.spec.dataset,
                version=version,
            )

    @bus.consumer(topics.DATA_ARRIVED, group=group, events=[DataArrived])
    async def on_data(event: DataArrived, ctx: HandlerContext) -> None:
        await store.keep_dataset(ctx.session, event)
        for model, revision, spec in await store.specs_for_dataset(ctx.session, event.dataset):
            if "data" not in spec.monitoring.retrain_on and await store.ever_trained(ctx.session, model):
                log.info(
                    "%s: dataset %s version %s kept for its next retrain (its retrain_on has no 'data')",
                    model,
                    event.dataset,
                    event.version,
                )
                continue
            await _queue(
                ctx,
                platform=bus.settings.topic_prefix,
                model=model,
                revision=revision,
                candidates=[c.estimator for c in spec.candidates],
                trigger="data-arrived",
                dataset=event.dataset,
                version=event.version,
            )

    @bus.consumer(topics.RETRAIN_REQUESTED, group=group, events=[RetrainRequested])
    async def on_retrain(event: RetrainRequested, ctx: HandlerContext) -> None:
        found = await store.specs.revision_of(ctx.session, event.model)
        if found is None:
            raise TrainerRefusal(f"no spec applied for model {event.model!r}: apply one before asking for a retrain")
        revision, spec = found
        version = await store.dataset_version(ctx.session, spec.dataset, event.dataset_version)
        if version is None:
            wanted = f"version {event.dataset_version!r} of" if event.dataset_version else "any version of"
            raise TrainerRefusal(f"no {wanted} dataset {spec.dataset!r} has arrived")
        await _queue(
            ctx,
            platform=bus.settings.topic_prefix,
            model=event.model,
            revision=revision,
            candidates=[c.estimator for c in spec.candidates],
            trigger="retrain-requested",
            dataset=spec.dataset,
            version=version,
        )


def _fit_process_init(settings: Settings) -> None:
    configure_logging(settings.model_copy(update={"service_name": f"{settings.service_name}-fit"}))


@dataclass
class Worker:
    """Claims training jobs and runs them, one at a time."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    artifacts: ArtifactStore
    executor: ProcessPoolExecutor | None = None
    tracer: trace.Tracer = field(default_factory=lambda: trace.get_tracer("modelbus.trainer"))

    def _pool(self) -> ProcessPoolExecutor:
        if self.executor is None:
            self.executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_fit_process_init,
                initargs=(self.settings,),
            )
        return self.executor

    async def run_forever(self) -> None:
        """Start the fit process, then run jobs as they come."""
        await asyncio.get_running_loop().run_in_executor(self._pool(), fit.warm_up)
        while True:
            try:
                if not await self.run_one():
                    await asyncio.sleep(IDLE_POLL_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("training worker failed; going on")
                await asyncio.sleep(1)

    async def run_one(self) -> bool:
        """Claim and run one job; False when there was none."""
        async with self.sessions() as session, session.begin():
            job = await store.claim_job(
                session, platform=self.settings.topic_prefix, lease_seconds=self.settings.trainer_lease_seconds
            )
        if job is None:
            return False
        carrier = {"traceparent": job.traceparent} if job.traceparent else {}
        token = otel_context.attach(extract(carrier))
        try:
            with self.tracer.start_as_current_span(
                f"trainer train {job.model}",
                attributes={"modelbus.run_id": job.run_id, "modelbus.attempt": job.attempts},
            ):
                await self._run(job)
        finally:
            otel_context.detach(token)
        return True

    async def _run(self, job: store.Job) -> None:
        log.info(
            "run %s of %s on %s@%s (attempt %d)",
            job.run_id,
            job.model,
            job.dataset.name,
            job.dataset.version,
            job.attempts,
        )
        renewing = asyncio.create_task(self._renew(job))
        try:
            with tempfile.TemporaryDirectory(prefix=f"modelbus-{job.run_id}-") as folder:
                await self._train_in(job, Path(folder))
        except Exception as exc:
            if is_transient(exc) or isinstance(exc, BrokenProcessPool):
                await self._retry_or_fail(job, "upload" if is_transient(exc) else "fit", exc)
            else:
                await self._fail(job, "fit", f"{type(exc).__name__}: {exc}")
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _train_in(self, job: store.Job, folder: Path) -> None:
        data = folder / f"data.{job.dataset.format}"
        try:
            await asyncio.to_thread(self.artifacts.get_file, job.dataset.uri, data, sha256=job.dataset.sha256)
        except (ArtifactIntegrityError, ArtifactAccessDenied, ArtifactNotFound) as exc:
            await self._fail(job, "load", str(exc))
            return
        except ArtifactError as exc:
            await self._retry_or_fail(job, "load", exc)
            return
        digest = job.dataset.sha256 or sha256_file(data)
        request = fit.Job(
            run_id=job.run_id,
            spec=job.spec.model_dump(mode="json"),
            data_path=str(data),
            data_format=job.dataset.format,
            data_sha256=digest,
            out_dir=str(folder / "out"),
            code_version=code_version(),
        )
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(self._pool(), fit.train, request)
        except BrokenProcessPool:
            self.executor = None
            raise
        if not outcome.ok:
            await self._fail(job, outcome.stage, outcome.reason, fit.outcome_violations(outcome))
            return
        refs = []
        try:
            for name, path in sorted(outcome.files.items()):
                key = f"{job.model}/{job.run_id}/{name}"
                stored = await asyncio.to_thread(self.artifacts.put_file, key, Path(path))
                refs.append(ArtifactRef(name=name, uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes))
        except ArtifactUnavailable as exc:
            await self._retry_or_fail(job, "upload", exc)
            return
        except ArtifactError as exc:
            await self._fail(job, "upload", str(exc))
            return
        trained = ModelTrained(
            model=job.model,
            run_id=job.run_id,
            task=job.spec.task,
            target=job.spec.target,
            dataset=job.dataset.name,
            dataset_version=job.dataset.version,
            data_sha256=digest,
            spec_revision=job.spec_revision,
            estimator=outcome.estimator,
            params=outcome.params,
            metrics=outcome.metrics,
            candidates=[CandidateResult.model_validate(c) for c in outcome.candidates],
            artifacts=refs,
            feature_schema=[FeatureSchema.model_validate(f) for f in outcome.feature_schema],
            reference_profile=ReferenceProfile.model_validate(outcome.profile),
            code_version=code_version(),
            training_seconds=outcome.training_seconds,
        )
        await self._close(job, "done", trained)

    async def _renew(self, job: store.Job) -> None:
        while True:
            lease = self.settings.trainer_lease_seconds
            await asyncio.sleep(lease / 3)
            try:
                async with self.sessions() as session, session.begin():
                    if not await store.renew(session, job.run_id, job.attempts, lease_seconds=lease):
                        log.warning("run %s is no longer ours", job.run_id)
                        return
            except Exception:
                log.warning("could not renew the lease of %s", job.run_id, exc_info=True)

    async def _retry_or_fail(self, job: store.Job, stage: str, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        if job.attempts >= self.settings.trainer_max_attempts:
            await self._fail(job, stage, f"gave up after {job.attempts} attempts: {reason}")
            return
        log.warning(
            "run %s: %s failed (%s); retrying (attempt %d/%d)",
            job.run_id,
            stage,
            reason,
            job.attempts,
            self.settings.trainer_max_attempts,
        )
        async with self.sessions() as session, session.begin():
            await store.release(session, job.run_id, job.attempts, error=reason)
        await asyncio.sleep(self.settings.handler_backoff_seconds * 2 ** (job.attempts - 1))

    async def _fail(
        self, job: store.Job, stage: str, reason: str, violations: list[ContractViolation] | None = None
    ) -> None:
        log.warning("run %s failed at %s: %s", job.run_id, stage, reason)
        failed = TrainingFailed(
            model=job.model,
            run_id=job.run_id,
            dataset=job.dataset.name,
            dataset_version=job.dataset.version,
            stage=stage,
            reason=reason,
            violations=violations or [],
            attempts=job.attempts,
        )
        await self._close(job, "failed", failed, error=reason)

    async def _close(self, job: store.Job, status: str, event: Event, *, error: str | None = None) -> None:
        lineage = event.model_copy(update={"correlation_id": job.correlation_id, "causation_id": job.cause_event_id})
        async with self.sessions() as session, session.begin():
            if await store.finish(session, job.run_id, job.attempts, status=status, error=error):
                self.bus.stage(session, lineage)
            else:
                log.warning("run %s was taken over by another trainer; its result is dropped", job.run_id)
        self.bus.wake_relay()

    def shutdown(self) -> None:
        """Stop the fit process."""
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Trainer:
    """One trainer process: database, bus, artifact store, worker."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    worker: Worker
    metrics: CollectorRegistry
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start consuming and training."""
        await self.bus.start()
        self.task = asyncio.create_task(self.worker.run_forever(), name="training-worker")

    async def stop(self) -> None:
        """Stop training and consuming."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.worker.shutdown()
        await self.bus.stop()
        await self.engine.dispose()


def build(settings: Settings, *, group: str = GROUP) -> Trainer:
    """The composition root of a trainer process."""
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    metrics = CollectorRegistry()
    provider = make_tracer_provider(settings)
    bus = Bus(settings, sessions=sessions, tracer_provider=provider, registry=metrics)
    register_consumers(bus, group=group)
    worker = Worker(
        settings=settings,
        sessions=sessions,
        bus=bus,
        artifacts=ArtifactStore(settings),
        tracer=provider.get_tracer("modelbus.trainer"),
    )
    return Trainer(settings=settings, engine=engine, sessions=sessions, bus=bus, worker=worker, metrics=metrics)
