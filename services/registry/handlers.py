"""The registry's handlers: every lifecycle event lands in the model's record, and a trained model
gets its version number and is handed to the evaluator."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from services.registry import domain
from shared.contract.events import (
    DataArrived,
    Event,
    ModelEvaluated,
    ModelRegistered,
    ModelTrained,
    RolloutChanged,
    TrainingFailed,
    TrainingStarted,
)
from shared.runtime.uow import UnitOfWork


class RegistryStore(Protocol):
    """What the registry's handlers change (SqlStore, and its twin MemoryStore)."""

    async def record_dataset(self, event: DataArrived, *, event_id: str) -> bool:
        """Record a dataset version; False if already recorded alike; RegistryRefusal if not alike."""

    async def record_training_started(self, event: TrainingStarted) -> None:
        """Open the training run (or fill in its start if ModelTrained came first)."""

    async def record_training_failed(self, event: TrainingFailed, *, event_id: str) -> None:
        """Close the run as failed and keep the failure in the model's history."""

    async def register_version(self, event: ModelTrained, *, event_id: str) -> tuple[domain.ModelVersion, bool]:
        """Give a trained model the next version number; returns (version, created)."""

    async def aliases_of(self, model: str) -> dict[str, int]:
        """Alias to version for one model."""

    async def mark_evaluating(self, event: ModelRegistered) -> None:
        """The version has been handed to the evaluator (unless something later already happened)."""

    async def record_evaluation(self, event: ModelEvaluated, *, event_id: str) -> bool:
        """Keep the evaluation and move the version's status; False if the status could not move."""

    async def record_rollout(self, event: RolloutChanged, *, event_id: str) -> domain.RolloutEffects:
        """Keep the transition and move aliases and statuses as the rollout says."""

    async def add_history(
        self,
        *,
        event_id: str,
        model: str,
        version: int | None,
        kind: str,
        summary: str,
        payload: dict[str, Any],
        occurred_at: datetime,
    ) -> None:
        """Record a lifecycle event about a model (idempotent by event id)."""


UoW = UnitOfWork[RegistryStore]


async def on_data_arrived(event: DataArrived, uow: UoW) -> None:
    """Record the dataset version (the same version with another digest or URI is refused)."""
    await uow.store.record_dataset(event, event_id=uow.envelope.id)


async def on_training_started(event: TrainingStarted, uow: UoW) -> None:
    """Open the training run."""
    await uow.store.record_training_started(event)


async def on_training_failed(event: TrainingFailed, uow: UoW) -> None:
    """Close the run as failed, in the model's history."""
    await uow.store.record_training_failed(event, event_id=uow.envelope.id)


async def on_model_trained(event: ModelTrained, uow: UoW) -> ModelRegistered | None:
    """The next version number, handed to the evaluator with the champion to beat."""
    version, created = await uow.store.register_version(event, event_id=uow.envelope.id)
    if not created:
        return None
    champion = (await uow.store.aliases_of(event.model)).get("champion")
    return domain.registered(version, champion=champion)


async def on_model_registered(event: ModelRegistered, uow: UoW) -> None:
    """registered → evaluating."""
    await uow.store.mark_evaluating(event)


async def on_model_evaluated(event: ModelEvaluated, uow: UoW) -> None:
    """Keep the evaluation; the version's status follows its decision."""
    await uow.store.record_evaluation(event, event_id=uow.envelope.id)


async def on_rollout_changed(event: RolloutChanged, uow: UoW) -> None:
    """Keep the transition; aliases and statuses move as the rollout says."""
    await uow.store.record_rollout(event, event_id=uow.envelope.id)


async def on_history(event: Event, uow: UoW) -> None:
    """Keep a drift, performance, alert or command event in the model's history."""
    entry = domain.history_entry(event)
    if entry is None:
        return
    version, summary = entry
    await uow.store.add_history(
        event_id=uow.envelope.id,
        model=str(getattr(event, "model")),  # noqa: B009 - every kept event names its model
        version=version,
        kind=event.event_type,
        summary=summary,
        payload=event.model_dump(mode="json"),
        occurred_at=event.occurred_at,
    )
