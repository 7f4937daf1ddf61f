"""The training worker's side of the queue on the trainer's in-memory store: a job is claimed
once, oldest first, under a lease; a lapsed lease lets another trainer take it over; only the
trainer that still holds a job closes it and emits its outcome, in the lifecycle that queued it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.trainer import commands as jobs
from services.trainer.memory import MemoryStore
from services.trainer.store import JobRequest
from shared.contract.events import DataArrived, ModelTrained, TrainingFailed
from shared.runtime.commands import MemoryCommands
from tests.support.examples import example
from tests.support.specs import spec_applied

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LEASE = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def queue(*runs: str) -> tuple[MemoryCommands[MemoryStore], Clock]:
    clock = Clock()
    store = MemoryStore(clock=clock)
    applied = spec_applied("churn")
    await store.keep_spec(applied)
    await store.keep_dataset(example(DataArrived, dataset=applied.spec.dataset, version="d1"))
    for run in runs:
        await store.add_job(
            JobRequest(
                "modelbus", run, "churn", "data", applied.spec.dataset, "d1", 1, f"corr-{run}", f"cause-{run}", None
            )
        )
    return MemoryCommands(store), clock


async def test_jobs_are_claimed_oldest_first_once_each_and_only_on_their_own_platform() -> None:
    bus, _ = await queue("run-a", "run-b")
    assert await bus.run(jobs.claim, jobs.Claim("elsewhere", LEASE)) is None
    first = await bus.run(jobs.claim, jobs.Claim("modelbus", LEASE))
    second = await bus.run(jobs.claim, jobs.Claim("modelbus", LEASE))
    assert first is not None and second is not None and (first.run_id, second.run_id) == ("run-a", "run-b")
    assert first.attempts == 1 and await bus.run(jobs.claim, jobs.Claim("modelbus", LEASE)) is None


async def test_a_lapsed_lease_is_taken_over_and_the_first_trainer_can_neither_renew_nor_close() -> None:
    bus, clock = await queue("run-a")
    mine = await bus.run(jobs.claim, jobs.Claim("modelbus", LEASE))
    assert mine is not None
    clock.now += timedelta(seconds=30)
    assert await bus.run(jobs.renew, jobs.Renew(mine, LEASE))  # renewed until T0 + 90 s
    clock.now += timedelta(seconds=59)
    assert await bus.run(jobs.claim, jobs.Claim("modelbus", LEASE)) is None, "the lease still holds"
    clock.now += timedelta(seconds=2)
    theirs = await bus.run(jobs.claim, jobs.Claim("modelbus", LEASE))
    assert theirs is not None and theirs.attempts == 2
    assert not await bus.run(jobs.renew, jobs.Renew(mine, LEASE))
    trained = example(ModelTrained, model="churn", run_id="run-a")
    assert not await bus.run(jobs.close, jobs.Close(mine, "done", trained))
    assert bus.emitted == []
    assert await bus.run(jobs.close, jobs.Close(theirs, "done", trained))
    [out] = bus.emitted
    assert (out.correlation_id, out.causation_id) == ("corr-run-a", "cause-run-a")


async def test_a_released_job_is_claimed_again_and_a_failed_one_is_closed_with_its_reason() -> None:
    bus, _ = await queue("run-a")
    first = await bus.run(jobs.claim, jobs.Claim("modelbus", LEASE))
    assert first is not None
    await bus.run(jobs.release, jobs.Release(first, "S3 away"))
    again = await bus.run(jobs.claim, jobs.Claim("modelbus", LEASE))
    assert again is not None and again.attempts == 2
    failed = example(TrainingFailed, model="churn", run_id="run-a", reason="gave up")
    assert await bus.run(jobs.close, jobs.Close(again, "failed", failed, "gave up"))
    assert bus.store.queue["run-a"].status == "failed" and bus.store.queue["run-a"].last_error == "gave up"
    assert [type(e) for e in bus.emitted] == [TrainingFailed]
    assert await bus.run(jobs.claim, jobs.Claim("modelbus", LEASE)) is None
