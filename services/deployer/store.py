"""The deployer's tables: its view of specs and versions, each model's rollouts, the command log.

Serving (the deployer's second entrypoint) reads these tables to know what to load and how to
route; only the deployer's consumers write them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Integer, String, Text, func, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.deployer import domain
from shared.contract.events import ArtifactRef, ModelRegistered
from shared.contract.spec import ModelSpec
from shared.runtime.db import Base
from shared.runtime.specview import SpecView, SpecViewColumns


class SpecRow(SpecViewColumns, Base):
    """The spec revision in force per model (its rollout policy)."""

    __tablename__ = "deployer_specs"


specs = SpecView(SpecRow)


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


# ---------------------------------------------------------------- specs and versions


async def keep_version(session: AsyncSession, event: ModelRegistered) -> None:
    """Remember a version's artifacts."""
    artifacts = [a.model_dump(mode="json") for a in event.artifacts]
    await session.execute(
        insert(VersionRow)
        .values(model=event.model, version=event.version, artifacts=artifacts, approved=False)
        .on_conflict_do_update(index_elements=[VersionRow.model, VersionRow.version], set_={"artifacts": artifacts})
    )


async def version_of(session: AsyncSession, model: str, version: int) -> VersionRow | None:
    """A registered version, if the deployer has seen it."""
    return await session.get(VersionRow, (model, version))


async def decide(session: AsyncSession, model: str, version: int, decision: str, *, approved: bool) -> None:
    """Record the evaluator's decision (or an operator's approval) on a version."""
    values = {"decision": decision, "approved": approved}
    await session.execute(
        insert(VersionRow)
        .values(model=model, version=version, artifacts=[], **values)
        .on_conflict_do_update(index_elements=[VersionRow.model, VersionRow.version], set_=values)
    )


async def newest_approved(session: AsyncSession, model: str) -> int | None:
    """The newest approved version of a model."""
    return await session.scalar(
        select(func.max(VersionRow.version)).where(VersionRow.model == model, VersionRow.approved.is_(True))
    )


def artifacts(row: VersionRow) -> list[ArtifactRef]:
    """A version's artifacts as references."""
    return [ArtifactRef.model_validate(a) for a in row.artifacts]


# ---------------------------------------------------------------- rollouts


async def lock_model(session: AsyncSession, model: str) -> ModelRow:
    """The model's row, created if new, locked until the transaction ends (one decision at a time)."""
    await session.execute(insert(ModelRow).values(model=model).on_conflict_do_nothing())
    row = await session.scalar(select(ModelRow).where(ModelRow.model == model).with_for_update())
    assert row is not None
    return row


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


async def current(session: AsyncSession, model: ModelRow) -> domain.Rollout | None:
    """The model's current (or last) rollout."""
    if model.rollout_id is None:
        return None
    row = await session.get(RolloutRow, model.rollout_id)
    return _rollout(row) if row else None


async def save(
    session: AsyncSession, model: ModelRow, rollout: domain.Rollout, *, traceparent: str | None = None
) -> None:
    """Persist a rollout's state; it becomes the model's current one, and its champion follows it.

    `traceparent`, given when the rollout starts, is kept for the rest of its life.
    """
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
    await session.execute(stmt.on_conflict_do_update(index_elements=[RolloutRow.rollout_id], set_=values))
    if rollout.state != "superseded":
        model.rollout_id = rollout.rollout_id
    if rollout.state == "promoted":
        model.champion = rollout.candidate
    elif rollout.state == "rolled-back":
        model.champion = rollout.stable


async def traceparent_of(session: AsyncSession, rollout_id: str) -> str | None:
    """The trace a rollout belongs to."""
    found: str | None = await session.scalar(select(RolloutRow.traceparent).where(RolloutRow.rollout_id == rollout_id))
    return found


async def log_command(
    session: AsyncSession,
    *,
    event_id: str,
    model: str,
    command: str,
    version: int | None,
    actor: str,
    outcome: str,
    reason: str,
) -> None:
    """Record a command and what came of it (once per event)."""
    await session.execute(
        insert(CommandRow)
        .values(
            event_id=event_id,
            model=model,
            command=command,
            version=version,
            actor=actor,
            outcome=outcome,
            reason=reason,
        )
        .on_conflict_do_nothing()
    )


# ---------------------------------------------------------------- what serving reads


@dataclass(frozen=True)
class LiveModel:
    """What serving needs for one model: its rollout, the versions it routes to, their artifacts."""

    model: str
    rollout: domain.Rollout
    artifacts: dict[int, list[ArtifactRef]]
    spec: ModelSpec | None


async def live_models(session: AsyncSession, only: frozenset[str] | None = None) -> list[LiveModel]:
    """Every model with a rollout (or the named ones), with the artifacts of the versions it routes to."""
    query = select(ModelRow).where(ModelRow.rollout_id.is_not(None))
    if only:
        query = query.where(ModelRow.model.in_(only))
    found: list[LiveModel] = []
    for model in (await session.scalars(query)).all():
        rollout = await current(session, model)
        if rollout is None:
            continue
        wanted = {v for v in (rollout.candidate, rollout.stable) if v is not None}
        rows = (
            await session.scalars(
                select(VersionRow).where(VersionRow.model == model.model, VersionRow.version.in_(wanted))
            )
        ).all()
        spec = await specs.of(session, model.model)
        found.append(LiveModel(model.model, rollout, {r.version: artifacts(r) for r in rows}, spec))
    return found
