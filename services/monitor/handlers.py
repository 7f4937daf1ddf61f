"""The monitor's handlers, thin: each hands its event to the steps (services.monitor.steps) with
its unit of work's store and `emit`; what follows (DriftDetected, CanaryAnalyzed,
PerformanceDegraded, RetrainRequested) is emitted in the same transaction. The sweep's timer runs
the same steps through commands (`CloseAged`, `Expire`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from services.monitor.records import Ledger
from services.monitor.steps import Watch, add, expire, labelled, sweep_one
from services.monitor.store import DatasetSeen, MonitorStore, Trained
from shared.contract.events import (
    DataArrived,
    LabelsArrived,
    ModelRegistered,
    ModelSpecApplied,
    ModelTrained,
    PredictionsLogged,
    RolloutChanged,
    TrainingStarted,
)
from shared.runtime.commands import CommandWork
from shared.runtime.uow import UnitOfWork

log = logging.getLogger("modelbus.monitor")
UoW = UnitOfWork[MonitorStore]


# ---------------------------------------------------------------- handlers


async def on_spec(event: ModelSpecApplied, uow: UoW, *, watch: Watch) -> None:
    """Keep the monitoring and rollout policies; the cached spec is dropped."""
    if not await uow.store.keep_spec(event):
        uow.drop(f"spec revision {event.revision} of {event.model} is not newer than the one in force")
        return
    watch.specs.pop(event.model, None)


async def on_trained(event: ModelTrained, uow: UoW) -> None:
    """Keep the run's reference profile (never recomputed from raw data) and what it was trained on."""
    await uow.store.keep_run(event.model, event.run_id, event.task, event.reference_profile, event.metrics)
    await uow.store.keep_training(event.model, Trained(event.run_id, event.dataset_version, event.spec_revision))


async def on_training_started(event: TrainingStarted, uow: UoW) -> None:
    """Keep what a run trains on: a retrain on the same data and spec would only repeat it."""
    await uow.store.keep_training(event.model, Trained(event.run_id, event.dataset_version, event.spec_revision))


async def on_data(event: DataArrived, uow: UoW) -> None:
    """Keep the dataset version: whether a retrain has anything new to learn from reads it."""
    await uow.store.keep_dataset(
        DatasetSeen(
            event.dataset, event.version, event.producer, event.uri, event.format, event.sha256, event.occurred_at
        )
    )


async def on_registered(event: ModelRegistered, uow: UoW) -> None:
    """Keep which run the version is."""
    await uow.store.keep_version(event.model, event.version, event.run_id)


async def on_rollout(event: RolloutChanged, uow: UoW) -> None:
    """Keep what is live: the candidate and stable versions of the rollout."""
    await uow.store.keep_live(
        event.model, event.rollout_id, event.to_state, event.candidate_version, event.stable_version
    )


async def on_labels(events: list[LabelsArrived], uow: UoW, *, watch: Watch) -> None:
    """A poll's labels, joined to their answers; a version's live performance is judged once it has
    enough of them (batched: one call per poll)."""
    ids = [e.id for e in uow.envelopes] if len(uow.envelopes) == len(events) else [uow.envelope.id] * len(events)
    await labelled(uow.store, watch, list(zip(events, ids, strict=True)), uow.emit)


async def on_predictions(events: list[PredictionsLogged], uow: UoW, *, watch: Watch) -> None:
    """A poll's predictions, into each version's open window (batched: one call per poll)."""
    await add(uow.store, watch, events, uow.emit)


# ---------------------------------------------------------------- the sweep's commands


@dataclass(frozen=True)
class CloseAged:
    """Close a version's open window if it aged past its policy's `window_seconds` (the sweep's
    timer, every few seconds, through the same unit of work as the event handlers)."""

    model: str
    version: int
    age: float


@dataclass(frozen=True)
class Expire:
    """Drop what outlived the label horizon or its wait, counting it in the ledgers."""

    now: datetime


async def close_aged(command: CloseAged, uow: CommandWork[MonitorStore], *, watch: Watch) -> bool:
    return await sweep_one(uow.store, watch, command.model, command.version, command.age, uow.emit)


async def expire_old(command: Expire, uow: CommandWork[MonitorStore], *, watch: Watch) -> dict[str, Ledger]:
    return await expire(uow.store, watch, command.now)
