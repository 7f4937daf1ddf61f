"""The trainer's tables: its view of specs and datasets, and training jobs (a durable queue).

`SqlStore` keeps them in PostgreSQL; `MemoryStore` is the in-memory twin of what the handlers use
(specs, datasets, queueing a job), for the handler tests; one contract test runs on both. The
worker's side of the queue (claim under a lease, renew, finish, release) is `SqlStore`'s alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import DateTime, Integer, String, Text, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.contract.events import DataArrived, ModelSpecApplied
from shared.contract.spec import ModelSpec
from shared.runtime.db import Base
from shared.runtime.specview import SpecView, SpecViewColumns


class SpecRow(SpecViewColumns, Base):
    """The spec revision in force per model, as read from the specs topic, with the dataset it names."""

    __tablename__ = "trainer_specs"

    dataset: Mapped[str] = mapped_column(String(128), index=True)


SPECS = SpecView(SpecRow)
JOBS_CHANNEL = "modelbus_trainer_jobs"  # NOTIFY: a job was queued (payload: its platform)


class DatasetRow(Base):
    """A dataset version the trainer may train on."""

    __tablename__ = "trainer_datasets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    arrived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobRow(Base):
    """A training run to do: pending, running (under a lease), done or failed."""

    __tablename__ = "trainer_jobs"

    run_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The topic prefix of the platform that queued it: trainers of another platform sharing the
    # database leave it alone (as the outbox relay does).
    platform: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(128))
    trigger: Mapped[str] = mapped_column(String(32))
    dataset: Mapped[str] = mapped_column(String(128))
    dataset_version: Mapped[str] = mapped_column(String(128))
    spec_revision: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    correlation_id: Mapped[str] = mapped_column(String(200))
    cause_event_id: Mapped[str] = mapped_column(String(200))
    traceparent: Mapped[str | None] = mapped_column(String(200))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Dataset:
    """A dataset version to load."""

    name: str
    version: str
    uri: str
    sha256: str | None
    format: str


@dataclass(frozen=True)
class Job:
    """A claimed training job with everything the run needs."""

    run_id: str
    model: str
    trigger: str
    attempts: int
    spec_revision: int
    spec: ModelSpec
    dataset: Dataset
    correlation_id: str
    cause_event_id: str
    traceparent: str | None


@dataclass(frozen=True)
class JobRequest:
    """A training run to queue: what to train, on which data, in which lifecycle."""

    platform: str
    run_id: str
    model: str
    trigger: str
    dataset: str
    version: str
    revision: int
    correlation_id: str
    cause_event_id: str
    traceparent: str | None


class TrainerStore(Protocol):
    """What the trainer's handlers keep: specs, datasets, queued runs."""

    async def keep_spec(self, event: ModelSpecApplied) -> bool:
        """Keep the newest revision of a model's spec (and the dataset it names); False if older."""

    async def spec_of(self, model: str) -> tuple[int, ModelSpec] | None:
        """(revision, spec) in force for a model, if any."""

    async def specs_for_dataset(self, dataset: str) -> list[tuple[str, int, ModelSpec]]:
        """(model, revision, spec) of every spec that trains on `dataset`, by model name."""

    async def keep_dataset(self, event: DataArrived) -> None:
        """Remember a dataset version (the first announcement of a version wins)."""

    async def dataset_version(self, name: str, version: str | None) -> str | None:
        """`version` if known, else the latest version of the dataset; None when there is none."""

    async def dataset(self, name: str, version: str) -> Dataset | None:
        """A known dataset version."""

    async def ever_trained(self, model: str) -> bool:
        """Whether a training job was ever queued for the model."""

    async def add_job(self, job: JobRequest) -> None:
        """Queue a training run (once per run id)."""

    async def claim_job(self, *, platform: str, lease_seconds: float) -> Job | None:
        """The oldest pending job, or one whose runner stopped renewing its lease; now ours."""

    async def renew(self, run_id: str, attempt: int, *, lease_seconds: float) -> bool:
        """Extend our lease; False if the job is no longer ours."""

    async def finish(self, run_id: str, attempt: int, *, status: str, error: str | None = None) -> bool:
        """Close our job as done or failed; False if someone else took it over meanwhile."""

    async def release(self, run_id: str, attempt: int, *, error: str) -> None:
        """Give a job back (a transient failure): pending again, to be retried."""


def _dataset(row: DatasetRow) -> Dataset:
    return Dataset(row.name, row.version, row.uri, row.sha256, row.format)


@dataclass(frozen=True)
class SqlStore:
    """The trainer's tables, in the transaction of `session`."""

    session: AsyncSession

    async def keep_spec(self, event: ModelSpecApplied) -> bool:
        """Keep the newest revision of a model's spec (and the dataset it names); False if older."""
        return await SPECS.keep(self.session, event, dataset=event.spec.dataset)

    async def spec_of(self, model: str) -> tuple[int, ModelSpec] | None:
        """(revision, spec) in force for a model, if any."""
        return await SPECS.revision_of(self.session, model)

    async def specs_for_dataset(self, dataset: str) -> list[tuple[str, int, ModelSpec]]:
        """(model, revision, spec) of every spec that trains on `dataset`, by model name."""
        rows = await self.session.scalars(select(SpecRow).where(SpecRow.dataset == dataset).order_by(SpecRow.model))
        return [
            (row.model, row.revision, ModelSpec.model_validate(row.spec, context={"lenient": True}))
            for row in rows.all()
        ]

    async def keep_dataset(self, event: DataArrived) -> None:
        """Remember a dataset version (the first announcement of a version wins)."""
        await self.session.execute(
            insert(DatasetRow)
            .values(
                name=event.dataset,
                version=event.version,
                uri=event.uri,
                sha256=event.sha256,
                format=event.format,
                arrived_at=event.occurred_at,
            )
            .on_conflict_do_nothing()
        )

    async def dataset_version(self, name: str, version: str | None) -> str | None:
        """`version` if known, else the latest version of the dataset; None when there is none."""
        query = select(DatasetRow.version).where(DatasetRow.name == name)
        if version is not None:
            query = query.where(DatasetRow.version == version)
        return await self.session.scalar(query.order_by(DatasetRow.arrived_at.desc()).limit(1))

    async def dataset(self, name: str, version: str) -> Dataset | None:
        """A known dataset version."""
        row = await self.session.get(DatasetRow, (name, version))
        return _dataset(row) if row is not None else None

    async def ever_trained(self, model: str) -> bool:
        """Whether a training job was ever queued for the model."""
        found = await self.session.scalar(select(JobRow.run_id).where(JobRow.model == model).limit(1))
        return found is not None

    async def add_job(self, job: JobRequest) -> None:
        """Queue a training run (once per run id)."""
        await self.session.execute(
            insert(JobRow)
            .values(
                run_id=job.run_id,
                platform=job.platform,
                model=job.model,
                trigger=job.trigger,
                dataset=job.dataset,
                dataset_version=job.version,
                spec_revision=job.revision,
                status="pending",
                attempts=0,
                correlation_id=job.correlation_id,
                cause_event_id=job.cause_event_id,
                traceparent=job.traceparent,
            )
            .on_conflict_do_nothing()
        )
        # The workers listening hear of it when this transaction commits (not at their next poll).
        await self.session.execute(
            text("SELECT pg_notify(:channel, :platform)"), {"channel": JOBS_CHANNEL, "platform": job.platform}
        )

    # ------------------------------------------------------------ the worker's side of the queue

    async def claim_job(self, *, platform: str, lease_seconds: float) -> Job | None:
        """The oldest pending job, or one whose runner stopped renewing its lease; now ours."""
        now = datetime.now(UTC)
        row = await self.session.scalar(
            select(JobRow)
            .where(
                JobRow.platform == platform,
                or_(JobRow.status == "pending", (JobRow.status == "running") & (JobRow.lease_until < now)),
            )
            .order_by(JobRow.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if row is None:
            return None
        row.status, row.attempts, row.lease_until = "running", row.attempts + 1, now + timedelta(seconds=lease_seconds)
        spec = await self.session.get(SpecRow, row.model)
        data = await self.session.get(DatasetRow, (row.dataset, row.dataset_version))
        if spec is None or data is None:
            row.status, row.last_error, row.finished_at = "failed", "spec or dataset vanished", now
            return None
        return Job(
            run_id=row.run_id,
            model=row.model,
            trigger=row.trigger,
            attempts=row.attempts,
            spec_revision=spec.revision,
            spec=ModelSpec.model_validate(spec.spec, context={"lenient": True}),
            dataset=Dataset(data.name, data.version, data.uri, data.sha256, data.format),
            correlation_id=row.correlation_id,
            cause_event_id=row.cause_event_id,
            traceparent=row.traceparent,
        )

    async def renew(self, run_id: str, attempt: int, *, lease_seconds: float) -> bool:
        """Extend our lease; False if the job is no longer ours."""
        result = await self.session.execute(
            update(JobRow)
            .where(JobRow.run_id == run_id, JobRow.attempts == attempt, JobRow.status == "running")
            .values(lease_until=datetime.now(UTC) + timedelta(seconds=lease_seconds))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def finish(self, run_id: str, attempt: int, *, status: str, error: str | None = None) -> bool:
        """Close our job as done or failed; False if someone else took it over meanwhile."""
        result = await self.session.execute(
            update(JobRow)
            .where(JobRow.run_id == run_id, JobRow.attempts == attempt, JobRow.status == "running")
            .values(status=status, last_error=error, finished_at=datetime.now(UTC), lease_until=None)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def release(self, run_id: str, attempt: int, *, error: str) -> None:
        """Give a job back (a transient failure): pending again, to be retried."""
        await self.session.execute(
            update(JobRow)
            .where(JobRow.run_id == run_id, JobRow.attempts == attempt)
            .values(status="pending", last_error=error, lease_until=None)
        )
