"""The trainer's worker: claims training jobs from PostgreSQL under a lease and runs them.

It fits in a separate process (so the Kafka consumer keeps its heartbeat however long a fit takes),
uploads the artifacts and emits ModelTrained or TrainingFailed with the job's closing, in one
transaction. A trainer killed mid-fit leaves its job running with a lease that runs out; the next
trainer takes it over and runs it again, and the job closes once, so exactly one version results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.trainer import commands as jobs
from services.trainer import fit, store
from services.trainer.mirror import Mirror, NoMirror
from shared.contract.events import ArtifactRef, ContractViolation, ModelTrained, TrainingFailed
from shared.runtime import feast
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
from shared.runtime.commands import SqlCommands
from shared.runtime.errors import is_transient
from shared.runtime.notify import Listener
from shared.runtime.settings import Settings
from shared.runtime.telemetry import code_version, configure_logging

log = logging.getLogger("modelbus.trainer")
IDLE_POLL_SECONDS = 1.0  # the poll when no NOTIFY came (the listener reconnecting)
PARENT_CHECK_SECONDS = 1.0


def _fit_process_init(settings: Settings) -> None:
    # A process group of its own: the fit process and the workers its fits start (joblib's loky
    # processes for n_jobs) end together.
    os.setpgrp()
    configure_logging(settings.model_copy(update={"service_name": f"{settings.service_name}-fit"}))
    feast.configure(settings)
    threading.Thread(target=_exit_with, args=(os.getppid(),), name="parent-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    """End the fit process and its workers when the trainer that started it is gone (killed, or
    stopped without shutting its pool down): its queue's pipe never closes for the child, which
    holds both ends."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os.killpg(0, signal.SIGKILL)


def stop_fit_processes(executor: ProcessPoolExecutor) -> None:
    """End the pool's fit process, the fit it may be running and that fit's workers."""
    running = list(getattr(executor, "_processes", {}).values())  # Python 3.14: terminate_workers()
    executor.shutdown(wait=False, cancel_futures=True)
    for process in running:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@dataclass
class Worker:
    """Claims training jobs and runs them, one at a time."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    artifacts: ArtifactStore
    mirror: Mirror = field(default_factory=NoMirror)
    executor: ProcessPoolExecutor | None = None
    tracer: trace.Tracer = field(default_factory=lambda: trace.get_tracer("modelbus.trainer"))
    queued: asyncio.Event = field(default_factory=asyncio.Event)
    commands: SqlCommands[jobs.Store] = field(init=False)

    def __post_init__(self) -> None:
        self.commands = SqlCommands(self.sessions, store.SqlStore, self.bus)

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
        """Start the fit process, then run jobs as they come: at once when PostgreSQL announces
        one (the queueing transaction's NOTIFY), else at the next poll."""
        listener = Listener(self.settings.database_url, store.JOBS_CHANNEL, self._announced)
        await listener.start()
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool(), fit.warm_up)
            while True:
                try:
                    if not await self.run_one():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.queued.wait(), timeout=IDLE_POLL_SECONDS)
                        self.queued.clear()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("training worker failed; going on")
                    await asyncio.sleep(1)
        finally:
            await listener.stop()

    def _announced(self, platform: str) -> None:
        if platform == self.settings.topic_prefix:
            self.queued.set()

    async def run_one(self) -> bool:
        """Claim and run one job; False when there was none."""
        job = await self.commands.run(
            jobs.claim, jobs.Claim(self.settings.topic_prefix, self.settings.trainer_lease_seconds)
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
            spec=job.spec,
            data_path=str(data),
            data_format=job.dataset.format,
            data_sha256=digest,
            out_dir=str(folder / "out"),
            code_version=code_version(),
            dask_scheduler=self.settings.trainer_dask_scheduler,
            n_jobs=self.settings.trainer_n_jobs,
            feast_repo=str(self.settings.feast_repo),
            model_threads=self.settings.model_threads,
        )
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(self._pool(), fit.train, request)
        except BrokenProcessPool:
            self.executor = None
            raise
        if not outcome.ok:
            await self._fail(job, outcome.stage, outcome.reason, outcome.violations)
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
            candidates=outcome.candidates,
            artifacts=refs,
            feature_schema=outcome.feature_schema,
            reference_profile=outcome.profile,
            code_version=code_version(),
            training_seconds=outcome.training_seconds,
            trigger=job.trigger,
            features_from=outcome.features_from,
        )
        if await self._close(job, "done", trained):
            self.mirror.run_finished(trained)  # after the run is closed: MLflow being down fails nothing

    async def _renew(self, job: store.Job) -> None:
        while True:
            lease = self.settings.trainer_lease_seconds
            await asyncio.sleep(lease / 3)
            try:
                if not await self.commands.run(jobs.renew, jobs.Renew(job, lease)):
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
        await self.commands.run(jobs.release, jobs.Release(job, reason))
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

    async def _close(
        self,
        job: store.Job,
        status: Literal["done", "failed"],
        outcome: ModelTrained | TrainingFailed,
        *,
        error: str | None = None,
    ) -> bool:
        closed = await self.commands.run(jobs.close, jobs.Close(job, status, outcome, error))
        if not closed:
            log.warning("run %s was taken over by another trainer; its result is dropped", job.run_id)
        return closed

    def shutdown(self) -> None:
        """Stop the fit process, and the fit it may be running: the job's lease lapses and a trainer
        (this one restarted, or another) takes it over. Left running, the fit would hold the
        process's exit until it finished (the pool's shutdown waits for the work in hand)."""
        if self.executor is not None:
            stop_fit_processes(self.executor)
            self.executor = None
