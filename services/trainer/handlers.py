"""The trainer's handlers: a consumer never fits. It records the spec or dataset, queues a job
and emits TrainingStarted in one transaction; the worker (services.trainer.worker) runs the job."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from services.trainer.mirror import Mirror
from services.trainer.store import JobRequest, TrainerStore
from shared.contract.events import (
    DataArrived,
    Event,
    ModelRegistered,
    ModelSpecApplied,
    RetrainRequested,
    TrainingStarted,
)
from shared.contract.spec import ModelSpec
from shared.runtime.specwait import release
from shared.runtime.telemetry import code_version
from shared.runtime.uow import UnitOfWork

log = logging.getLogger("modelbus.trainer")
UoW = UnitOfWork[TrainerStore]


class TrainerRefusal(ValueError):
    """A request the trainer cannot act on (no spec, no such dataset version); dead-lettered with why."""


def run_id_for(model: str, cause_event_id: str) -> str:
    """One run per model and cause: a redelivered cause maps to the same run."""
    return f"run-{uuid.uuid5(uuid.NAMESPACE_URL, f'modelbus:{model}:{cause_event_id}').hex[:16]}"


async def queue(
    uow: UoW, *, platform: str, model: str, revision: int, spec: ModelSpec, trigger: str, version: str
) -> None:
    """Queue a run of `model` on `version` of its dataset, and announce it."""
    data = await uow.store.dataset(spec.dataset, version)
    run_id = run_id_for(model, uow.envelope.id)
    traceparent = uow.envelope.traceparent
    if trigger in ("retrain-requested", "feedback"):  # a new lifecycle: its own trace, linked to its cause
        traceparent = uow.start_trace(f"lifecycle {model} retrain") or traceparent
    await uow.store.add_job(
        JobRequest(
            platform=platform,
            run_id=run_id,
            model=model,
            trigger=trigger,
            dataset=spec.dataset,
            version=version,
            revision=revision,
            correlation_id=uow.envelope.event.correlation_id,
            cause_event_id=uow.envelope.id,
            traceparent=traceparent,
        )
    )
    uow.emit(
        TrainingStarted(
            model=model,
            run_id=run_id,
            trigger=trigger,
            dataset=spec.dataset,
            dataset_version=version,
            data_sha256=data.sha256 if data else None,
            spec_revision=revision,
            candidates=[c.estimator for c in spec.candidates],
            code_version=code_version(),
        )
    )


@dataclass(frozen=True)
class EarlyData:
    """Data that arrived before its model's first spec: kept as a dataset version already (so
    parking keeps nothing more); a first spec releases the latest version, for the first training."""

    store: TrainerStore
    dataset: str

    async def spec_of(self, model: str) -> ModelSpec | None:
        """The spec in force for a model, if any."""
        found = await self.store.spec_of(model)
        return found[1] if found is not None else None

    async def park(self, work: str) -> None:
        """Nothing to keep: the data is a recorded dataset version."""

    async def unpark(self, model: str) -> list[str]:
        """The latest version of the dataset, unless the model was trained already."""
        if await self.store.ever_trained(model):
            return []
        latest = await self.store.dataset_version(self.dataset, None)
        return [latest] if latest is not None else []


async def on_spec(event: ModelSpecApplied, uow: UoW, *, platform: str) -> list[Event]:
    """Keep the newest spec; a model's first spec trains on data that arrived before it (specs and
    data travel on different topics, so a trainer may well see the data first)."""
    if not await uow.store.keep_spec(event):
        uow.drop(f"spec revision {event.revision} of {event.model} is not newer than the one in force")
        return []

    async def train(spec: ModelSpec, version: str) -> list[Event]:
        await queue(
            uow,
            platform=platform,
            model=event.model,
            revision=event.revision,
            spec=spec,
            trigger="data-arrived",
            version=version,
        )
        return []

    return await release(EarlyData(uow.store, event.spec.dataset), event.model, event.spec, train)


async def on_data(event: DataArrived, uow: UoW, *, platform: str) -> None:
    """Keep the dataset version; train every model whose spec names it (and retrains on data). A
    dataset the monitor built from production feedback trains the model it was built for."""
    await uow.store.keep_dataset(event)
    feedback = event.producer == "monitor" and event.lineage is not None
    for model, revision, spec in await uow.store.specs_for_dataset(event.dataset):
        if feedback:  # the monitor builds feedback data only when a retrain is wanted
            if event.lineage is not None and event.lineage.model != model:
                continue
        elif "data" not in spec.monitoring.retrain_on and await uow.store.ever_trained(model):
            log.info(
                "%s: dataset %s version %s kept for its next retrain (its retrain_on has no 'data')",
                model,
                event.dataset,
                event.version,
            )
            continue
        await queue(
            uow,
            platform=platform,
            model=model,
            revision=revision,
            spec=spec,
            trigger="feedback" if feedback else "data-arrived",
            version=event.version,
        )


async def on_retrain(event: RetrainRequested, uow: UoW, *, platform: str) -> None:
    """Train on the named dataset version (or the latest), in a new lifecycle; refused without a
    spec or data."""
    found = await uow.store.spec_of(event.model)
    if found is None:
        raise TrainerRefusal(f"no spec applied for model {event.model!r}: apply one before asking for a retrain")
    revision, spec = found
    version = await uow.store.dataset_version(spec.dataset, event.dataset_version)
    if version is None:
        wanted = f"version {event.dataset_version!r} of" if event.dataset_version else "any version of"
        raise TrainerRefusal(f"no {wanted} dataset {spec.dataset!r} has arrived")
    await queue(
        uow,
        platform=platform,
        model=event.model,
        revision=revision,
        spec=spec,
        trigger="retrain-requested",
        version=version,
    )


async def on_registered(event: ModelRegistered, uow: UoW, *, mirror: Mirror) -> None:
    """A version numbered by the registry: its MLflow run is tagged with it and it becomes an MLflow
    model version (when runs are mirrored; the mirror works in the background)."""
    mirror.version_registered(event)
