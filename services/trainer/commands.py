"""The training worker's side of the job queue, as commands through the unit of work
(`shared.runtime.commands`): claim a job under a lease, renew the lease, give a job back after a
transient failure, and close it with its outcome, which is emitted only if the job is still ours
(a trainer that lost its lease to another emits nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.trainer.store import Job, TrainerStore
from shared.contract.events import ModelTrained, TrainingFailed
from shared.runtime.commands import CommandWork

Store = TrainerStore
Work = CommandWork[TrainerStore]


@dataclass(frozen=True)
class Claim:
    """Take the oldest pending job, or one whose runner stopped renewing its lease."""

    platform: str
    lease_seconds: float


@dataclass(frozen=True)
class Renew:
    """Extend the lease of a job we run."""

    job: Job
    lease_seconds: float


@dataclass(frozen=True)
class Release:
    """Give a job back to be tried again (a transient failure)."""

    job: Job
    error: str


@dataclass(frozen=True)
class Close:
    """End a job with its outcome: `done` with ModelTrained, `failed` with TrainingFailed."""

    job: Job
    status: Literal["done", "failed"]
    outcome: ModelTrained | TrainingFailed
    error: str | None = None


async def claim(command: Claim, uow: Work) -> Job | None:
    return await uow.store.claim_job(platform=command.platform, lease_seconds=command.lease_seconds)


async def renew(command: Renew, uow: Work) -> bool:
    return await uow.store.renew(command.job.run_id, command.job.attempts, lease_seconds=command.lease_seconds)


async def release(command: Release, uow: Work) -> None:
    await uow.store.release(command.job.run_id, command.job.attempts, error=command.error)


async def close(command: Close, uow: Work) -> bool:
    """Close the job; its outcome goes out in the lifecycle that queued it, only if it was ours."""
    job = command.job
    if not await uow.store.finish(job.run_id, job.attempts, status=command.status, error=command.error):
        return False
    uow.emit(
        command.outcome.model_copy(update={"correlation_id": job.correlation_id, "causation_id": job.cause_event_id})
    )
    return True
