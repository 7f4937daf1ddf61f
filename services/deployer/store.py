"""The deployer's tables: its view of specs and versions, each model's rollouts, the command log.

`SqlStore` keeps them in PostgreSQL; `MemoryStore` is its in-memory twin for the handler tests.
Both take and give domain records (`KnownVersion`, `ModelState`, `Rollout`), never rows, and one
contract test runs on both. Serving (the deployer's second entrypoint) reads what is live through
`live_models` when it starts and as a safety net; only the deployer's consumers write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from sqlalchemy import Boolean, DateTime, Float, Integer, String, Text, func, select, text, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.deployer import domain
from shared.contract.events import ArtifactRef, ModelRegistered, ModelSpecApplied
from shared.contract.spec import ModelSpec
from shared.runtime.db import Base
from shared.runtime.specview import SpecView, SpecViewColumns, SqlSpecs


class SpecRow(SpecViewColumns, Base):
    """The spec revision in force per model (its rollout policy)."""

    __tablename__ = "deployer_specs"


SPECS = SpecView(SpecRow)


class VersionRow(Base):
    """A registered version: its artifacts and whether it may be rolled out."""

    __tablename__ = "deployer_versions"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    artifacts: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    decision: Mapped[str | None] = mapped_column(String(32))
    approved: Mapped[bool] = mapped_column(Boolean, default=False)


class ModelRow(Base):
    """Per model: the champion and the current rollout; also the row each decision locks."""

    __tablename__ = "deployer_models"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    champion: Mapped[int | None] = mapped_column(Integer)
    rollout_id: Mapped[str | None] = mapped_column(String(64))


class RolloutRow(Base):
    """A rollout's persisted state machine."""

    __tablename__ = "deployer_rollouts"

    rollout_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    candidate: Mapped[int] = mapped_column(Integer)
    stable: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer)
    steps: Mapped[list[float]] = mapped_column(JSONB)
    shadow: Mapped[bool] = mapped_column(Boolean)
    weight: Mapped[float | None] = mapped_column(Float)
    paused_by: Mapped[str | None] = mapped_column(String(128))
    paused_from: Mapped[str | None] = mapped_column(String(16))
    entered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The trace of the lifecycle that started it: its later steps are spans of that trace too.
    traceparent: Mapped[str | None] = mapped_column(String(64), nullable=True)


class CommandRow(Base):
    """Every operator command the deployer received, carried out or refused, and why."""

    __tablename__ = "deployer_commands"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    command: Mapped[str] = mapped_column(String(16))
    version: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


@dataclass(frozen=True)
class LiveModel:
    """What serving needs for one model: its rollout, the versions it routes to, their artifacts."""

    model: str
    rollout: domain.Rollout
    artifacts: dict[int, list[ArtifactRef]]
    spec: ModelSpec | None


@dataclass(frozen=True)
class Command:
    """An operator command as the deployer received it, and what came of it."""

    event_id: str
    model: str
    command: str
    version: int | None
    actor: str
    outcome: str
    reason: str


class DeployerStore(Protocol):
    """What the deployer keeps: specs, versions, each model's state and rollouts, the command log."""

    async def keep_spec(self, event: ModelSpecApplied) -> bool:
        """Keep the newest revision of a model's spec; False if an older one arrived late."""

    async def spec_of(self, model: str) -> ModelSpec | None:
        """The spec in force for a model, if any."""

    async def keep_version(self, event: ModelRegistered) -> None:
        """Remember a version's artifacts."""

    async def version_of(self, model: str, version: int) -> domain.KnownVersion | None:
        """A version, if the deployer has seen it."""

    async def decide(self, model: str, version: int, decision: str, *, approved: bool) -> None:
        """Record the evaluator's decision (or an operator's approval) on a version."""

    async def newest_approved(self, model: str) -> int | None:
        """The newest approved version of a model."""

    async def lock(self, model: str) -> domain.ModelState:
        """The model's state, created if new, locked until the transaction ends (one decision at a time)."""

    async def current(self, state: domain.ModelState) -> domain.Rollout | None:
        """The model's current (or last) rollout."""

    async def save(self, state: domain.ModelState, rollout: domain.Rollout, *, traceparent: str | None = None) -> None:
        """Persist a rollout's state and the model's state that follows from it (domain.after_save).

        `traceparent`, given when the rollout starts, is kept for the rest of its life.
        """

    async def traceparent_of(self, rollout_id: str) -> str | None:
        """The trace a rollout belongs to."""

    async def knows_rollout(self, model: str, rollout_id: str) -> bool:
        """Whether the deployer started this rollout of the model."""

    async def log_command(self, command: Command) -> None:
        """Record a command and what came of it (once per event)."""

    async def audit_entry(self, audit_id: int) -> domain.AuditEntry | None:
        """The registry's audit entry of that id, if there is one (read, never written: the log is the registry's)."""

    async def live_models(self, only: frozenset[str] | None = None) -> list[LiveModel]:
        """Every model with a rollout (or the named ones), with the artifacts of the versions it routes to."""


def _known(row: VersionRow) -> domain.KnownVersion:
    return domain.KnownVersion(
        tuple(ArtifactRef.model_validate(a) for a in row.artifacts), row.decision, bool(row.approved)
    )


def _rollout(row: RolloutRow) -> domain.Rollout:
    return domain.Rollout(
        model=row.model,
        rollout_id=row.rollout_id,
        candidate=row.candidate,
        stable=row.stable,
        state=row.state,  # type: ignore[arg-type]
        step=row.step,
        steps=tuple(row.steps),
        shadow=row.shadow,
        paused_by=row.paused_by,
        paused_from=row.paused_from,  # type: ignore[arg-type]
        entered_at=row.entered_at,
        weight=row.weight,
    )


@dataclass(frozen=True)
class SqlStore(SqlSpecs):
    """The deployer's tables, in the transaction of `session`."""

    specs: ClassVar[SpecView] = SPECS
    session: AsyncSession

    async def keep_version(self, event: ModelRegistered) -> None:
        """Remember a version's artifacts."""
        artifacts = [a.model_dump(mode="json") for a in event.artifacts]
        await self.session.execute(
            insert(VersionRow)
            .values(model=event.model, version=event.version, artifacts=artifacts, approved=False)
            .on_conflict_do_update(index_elements=[VersionRow.model, VersionRow.version], set_={"artifacts": artifacts})
        )

    async def version_of(self, model: str, version: int) -> domain.KnownVersion | None:
        """A version, if the deployer has seen it."""
        row = await self.session.get(VersionRow, (model, version), populate_existing=True)
        return _known(row) if row is not None else None

    async def decide(self, model: str, version: int, decision: str, *, approved: bool) -> None:
        """Record the evaluator's decision (or an operator's approval) on a version."""
        values = {"decision": decision, "approved": approved}
        await self.session.execute(
            insert(VersionRow)
            .values(model=model, version=version, artifacts=[], **values)
            .on_conflict_do_update(index_elements=[VersionRow.model, VersionRow.version], set_=values)
        )

    async def newest_approved(self, model: str) -> int | None:
        """The newest approved version of a model."""
        return await self.session.scalar(
            select(func.max(VersionRow.version)).where(VersionRow.model == model, VersionRow.approved.is_(True))
        )

    async def lock(self, model: str) -> domain.ModelState:
        """The model's state, created if new, locked until the transaction ends (one decision at a time)."""
        await self.session.execute(insert(ModelRow).values(model=model).on_conflict_do_nothing())
        row = await self.session.scalar(
            select(ModelRow).where(ModelRow.model == model).with_for_update().execution_options(populate_existing=True)
        )
        assert row is not None
        return domain.ModelState(row.model, row.champion, row.rollout_id)

    async def current(self, state: domain.ModelState) -> domain.Rollout | None:
        """The model's current (or last) rollout."""
        if state.rollout_id is None:
            return None
        row = await self.session.get(RolloutRow, state.rollout_id, populate_existing=True)
        return _rollout(row) if row else None

    async def save(self, state: domain.ModelState, rollout: domain.Rollout, *, traceparent: str | None = None) -> None:
        """Persist a rollout's state and the model's state that follows from it."""
        values = {
            "model": rollout.model,
            "candidate": rollout.candidate,
            "stable": rollout.stable,
            "state": rollout.state,
            "step": rollout.step,
            "steps": list(rollout.steps),
            "shadow": rollout.shadow,
            "weight": rollout.weight,
            "paused_by": rollout.paused_by,
            "paused_from": rollout.paused_from,
            "entered_at": rollout.entered_at,
        }
        stmt = insert(RolloutRow).values(rollout_id=rollout.rollout_id, traceparent=traceparent, **values)
        await self.session.execute(stmt.on_conflict_do_update(index_elements=[RolloutRow.rollout_id], set_=values))
        await self.session.execute(
            update(ModelRow)
            .where(ModelRow.model == state.model)
            .values(champion=state.champion, rollout_id=state.rollout_id)
        )

    async def traceparent_of(self, rollout_id: str) -> str | None:
        """The trace a rollout belongs to."""
        found: str | None = await self.session.scalar(
            select(RolloutRow.traceparent).where(RolloutRow.rollout_id == rollout_id)
        )
        return found

    async def knows_rollout(self, model: str, rollout_id: str) -> bool:
        """Whether the deployer started this rollout of the model."""
        found = await self.session.scalar(
            select(RolloutRow.rollout_id).where(RolloutRow.rollout_id == rollout_id, RolloutRow.model == model)
        )
        return found is not None

    async def log_command(self, command: Command) -> None:
        """Record a command and what came of it (once per event)."""
        await self.session.execute(
            insert(CommandRow)
            .values(
                event_id=command.event_id,
                model=command.model,
                command=command.command,
                version=command.version,
                actor=command.actor,
                outcome=command.outcome,
                reason=command.reason,
            )
            .on_conflict_do_nothing()
        )

    async def audit_entry(self, audit_id: int) -> domain.AuditEntry | None:
        """The registry's audit entry of that id, if there is one: read from the registry's table,
        the one place the deployer reads beside its own (the log is the registry's to write)."""
        row = (
            await self.session.execute(
                text("SELECT actor, action, target, outcome FROM registry_audit WHERE id = :id"), {"id": audit_id}
            )
        ).first()
        return domain.AuditEntry(*row) if row is not None else None

    async def live_models(self, only: frozenset[str] | None = None) -> list[LiveModel]:
        """Every model with a rollout (or the named ones), with the artifacts of the versions it routes to."""
        query = select(ModelRow).where(ModelRow.rollout_id.is_not(None))
        if only:
            query = query.where(ModelRow.model.in_(only))
        found: list[LiveModel] = []
        for model in (await self.session.scalars(query)).all():
            rollout = await self.current(domain.ModelState(model.model, model.champion, model.rollout_id))
            if rollout is None:
                continue
            wanted = {v for v in (rollout.candidate, rollout.stable) if v is not None}
            rows = (
                await self.session.scalars(
                    select(VersionRow).where(VersionRow.model == model.model, VersionRow.version.in_(wanted))
                )
            ).all()
            artifacts = {r.version: list(_known(r).artifacts) for r in rows}
            found.append(LiveModel(model.model, rollout, artifacts, await self.spec_of(model.model)))
        return found
