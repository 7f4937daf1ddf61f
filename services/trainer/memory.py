"""The trainer's store in dictionaries: the twin of `SqlStore` (services/trainer/store.py) for the
handler tests; the store contract (tests/contracts/trainer_store.py) runs on both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.trainer.store import Dataset, Job, JobRequest
from shared.contract.events import DataArrived, ModelSpecApplied
from shared.contract.spec import ModelSpec
from shared.runtime.specview import is_news


@dataclass
class MemoryStore:
    """What the trainer's handlers keep, in dictionaries: the twin of `SqlStore` for handler tests."""

    specs: dict[str, ModelSpecApplied] = field(default_factory=dict)
    datasets: dict[tuple[str, str], tuple[Dataset, datetime]] = field(default_factory=dict)
    jobs: dict[str, JobRequest] = field(default_factory=dict)  # in the order they were queued
    queue: dict[str, QueuedJob] = field(default_factory=dict)  # each job's state in the queue
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    async def keep_spec(self, event: ModelSpecApplied) -> bool:
        """Keep the newest revision of a model's spec (and the dataset it names); False if older."""
        known = self.specs.get(event.model)
        if not is_news(known.revision if known is not None else None, event):
            return False
        self.specs[event.model] = event
        return True

    async def spec_of(self, model: str) -> tuple[int, ModelSpec] | None:
        """(revision, spec) in force for a model, if any."""
        known = self.specs.get(model)
        return (known.revision, known.spec) if known is not None else None

    async def specs_for_dataset(self, dataset: str) -> list[tuple[str, int, ModelSpec]]:
        """(model, revision, spec) of every spec that trains on `dataset`, by model name."""
        return [(m, e.revision, e.spec) for m, e in sorted(self.specs.items()) if e.spec.dataset == dataset]

    async def keep_dataset(self, event: DataArrived) -> None:
        """Remember a dataset version (the first announcement of a version wins)."""
        found = Dataset(event.dataset, event.version, event.uri, event.sha256, event.format)
        self.datasets.setdefault((event.dataset, event.version), (found, event.occurred_at))

    async def dataset_version(self, name: str, version: str | None) -> str | None:
        """`version` if known, else the latest version of the dataset; None when there is none."""
        known = [(at, v) for (n, v), (_, at) in self.datasets.items() if n == name and version in (None, v)]
        return max(known)[1] if known else None

    async def dataset(self, name: str, version: str) -> Dataset | None:
        """A known dataset version."""
        found = self.datasets.get((name, version))
        return found[0] if found is not None else None

    async def ever_trained(self, model: str) -> bool:
        """Whether a training job was ever queued for the model."""
        return any(job.model == model for job in self.jobs.values())

    async def add_job(self, job: JobRequest) -> None:
        """Queue a training run (once per run id)."""
        if job.run_id not in self.jobs:
            self.jobs[job.run_id] = job
            self.queue[job.run_id] = QueuedJob()

    async def claim_job(self, *, platform: str, lease_seconds: float) -> Job | None:
        """The oldest pending job, or one whose runner stopped renewing its lease; now ours."""
        now = self.clock()
        for run_id, request in self.jobs.items():
            state = self.queue[run_id]
            lapsed = state.status == "running" and state.lease_until is not None and state.lease_until < now
            if request.platform != platform or not (state.status == "pending" or lapsed):
                continue
            state.status, state.attempts = "running", state.attempts + 1
            state.lease_until = now + timedelta(seconds=lease_seconds)
            spec, data = self.specs.get(request.model), self.datasets.get((request.dataset, request.version))
            if spec is None or data is None:
                state.status, state.last_error, state.lease_until = "failed", "spec or dataset vanished", None
                return None
            return Job(
                run_id=run_id,
                model=request.model,
                trigger=request.trigger,
                attempts=state.attempts,
                spec_revision=spec.revision,
                spec=spec.spec,
                dataset=data[0],
                correlation_id=request.correlation_id,
                cause_event_id=request.cause_event_id,
                traceparent=request.traceparent,
            )
        return None

    def _ours(self, run_id: str, attempt: int) -> QueuedJob | None:
        state = self.queue.get(run_id)
        return state if state is not None and state.attempts == attempt and state.status == "running" else None

    async def renew(self, run_id: str, attempt: int, *, lease_seconds: float) -> bool:
        """Extend our lease; False if the job is no longer ours."""
        state = self._ours(run_id, attempt)
        if state is None:
            return False
        state.lease_until = self.clock() + timedelta(seconds=lease_seconds)
        return True

    async def finish(self, run_id: str, attempt: int, *, status: str, error: str | None = None) -> bool:
        """Close our job as done or failed; False if someone else took it over meanwhile."""
        state = self._ours(run_id, attempt)
        if state is None:
            return False
        state.status, state.last_error, state.lease_until = status, error, None
        return True

    async def release(self, run_id: str, attempt: int, *, error: str) -> None:
        """Give a job back (a transient failure): pending again, to be retried."""
        state = self.queue.get(run_id)
        if state is not None and state.attempts == attempt:
            state.status, state.last_error, state.lease_until = "pending", error, None


@dataclass
class QueuedJob:
    """A job's place in the in-memory queue."""

    status: str = "pending"
    attempts: int = 0
    lease_until: datetime | None = None
    last_error: str | None = None
