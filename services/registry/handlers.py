"""The registry's handlers: every lifecycle event lands in the model's record, and a trained model
gets its version number and is handed to the evaluator."""

from __future__ import annotations

from services.registry import domain
from services.registry.store import RegistryStore
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

UoW = UnitOfWork[RegistryStore]


async def on_data_arrived(event: DataArrived, uow: UoW) -> None:
    """Record the dataset version (the same version with another digest or URI is refused)."""
    recorded = await uow.store.record_dataset(event, event_id=uow.envelope.id)
    if recorded is not None:
        domain.check_same_dataset(event, *recorded)


async def on_training_started(event: TrainingStarted, uow: UoW) -> None:
    """Open the training run."""
    await uow.store.record_training_started(event)


async def on_training_failed(event: TrainingFailed, uow: UoW) -> None:
    """Close the run as failed, in the model's history."""
    await uow.store.record_training_failed(event)
    await uow.store.add_history(
        event_id=uow.envelope.id,
        model=event.model,
        version=None,
        kind="TrainingFailed",
        summary=domain.failure_summary(event),
        payload=event.model_dump(mode="json"),
        occurred_at=event.occurred_at,
    )


async def on_model_trained(event: ModelTrained, uow: UoW) -> ModelRegistered | None:
    """The next version number, handed to the evaluator with the champion to beat."""
    version, created = await uow.store.register_version(event, event_id=uow.envelope.id)
    if not created:
        return None
    champion = (await uow.store.aliases_of(event.model)).get("champion")
    return domain.registered(version, champion=champion)


async def on_model_registered(event: ModelRegistered, uow: UoW) -> None:
    """registered → evaluating (unless something later already happened to the version)."""
    try:
        status = await uow.store.status_of(event.model, event.version, lock=True)
    except domain.NotFound:
        return  # numbered by another registry's store: nothing of it here to move
    if status == "registered":
        await uow.store.set_status(event.model, event.version, "evaluating", "handed to the evaluator")


async def on_model_evaluated(event: ModelEvaluated, uow: UoW) -> None:
    """Keep the evaluation; the version's status follows its decision."""
    await record_evaluation(uow.store, event, event_id=uow.envelope.id)


async def on_rollout_changed(event: RolloutChanged, uow: UoW) -> None:
    """Keep the transition; aliases and statuses move as the rollout says."""
    await record_rollout(uow.store, event, event_id=uow.envelope.id)


async def move(store: RegistryStore, model: str, version: int, status: str, reason: str) -> bool:
    """Move a version to `status` if its lifecycle allows it (domain.can_move); False if it does
    not (a late or replayed event: the status stays). Raises NotFound."""
    if not domain.can_move(await store.status_of(model, version, lock=True), status):
        return False
    await store.set_status(model, version, status, reason)
    return True


async def record_evaluation(store: RegistryStore, event: ModelEvaluated, *, event_id: str) -> bool:
    """Keep the evaluation and move the version as its decision says, then apply what a rollout
    parked on it while it awaited its evaluation; False if the decision's status could not move."""
    await store.status_of(event.model, event.version, lock=True)  # NotFound: a version never numbered
    await store.keep_evaluation(event, event_id=event_id)
    moved = await move(
        store,
        event.model,
        event.version,
        domain.status_after_evaluation(event.decision),
        domain.evaluation_reason(event),
    )
    parked = await store.take_parked(event.model, event.version)
    if parked is not None:
        await move(store, event.model, event.version, *parked)
    return moved


async def record_rollout(store: RegistryStore, event: RolloutChanged, *, event_id: str) -> domain.RolloutEffects:
    """Keep the transition and move statuses and aliases as the rollout says; a status that comes
    before the version's evaluation is parked on it until the evaluation is recorded."""
    await store.keep_rollout(event, event_id=event_id)
    effects = domain.rollout_effects(event, await store.aliases_of(event.model))
    for version, (status, reason) in effects.statuses.items():
        if not await move(store, event.model, version, status, reason) and domain.awaits_evaluation(
            await store.status_of(event.model, version)
        ):
            await store.park(event.model, version, status, reason)
    for alias in effects.drop_aliases - set(effects.set_aliases):
        await store.drop_alias(event.model, alias)
    for alias, version in effects.set_aliases.items():
        await store.status_of(event.model, version)  # NotFound: an alias names versions that exist
        await store.set_alias(event.model, alias, version, by=f"rollout {event.rollout_id}")
    return effects


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
