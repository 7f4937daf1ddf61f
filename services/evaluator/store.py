"""The evaluator's tables: its view of specs, the versions it may compare with, its results.

`SqlStore` keeps them in PostgreSQL; `MemoryStore` is its in-memory twin for the handler tests.
Both take and give events and domain values, never rows, and one contract test runs on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from sqlalchemy import Boolean, DateTime, Float, Integer, String, delete, func, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.contract.events import ArtifactRef, ModelEvaluated, ModelRegistered, ModelSpecApplied
from shared.contract.spec import ModelSpec
from shared.runtime.db import Base
from shared.runtime.specview import SpecView, SpecViewColumns, SqlSpecs


class SpecRow(SpecViewColumns, Base):
    """The spec revision in force per model."""

    __tablename__ = "evaluator_specs"


SPECS = SpecView(SpecRow)


class VersionRow(Base):
    """A registered version and its artifacts (a champion to compare with, later)."""

    __tablename__ = "evaluator_versions"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    artifacts: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)


class ParkedRow(Base):
    """A registration that arrived before its model's spec: judged when the spec arrives."""

    __tablename__ = "evaluator_parked"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    event: Mapped[dict[str, Any]] = mapped_column(JSONB)
    parked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ResultRow(Base):
    """An evaluation: decision, every gate, timing."""

    __tablename__ = "evaluator_results"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    decision: Mapped[str] = mapped_column(String(32))
    passed: Mapped[bool] = mapped_column(Boolean)
    champion_version: Mapped[int | None] = mapped_column(Integer)
    gates: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    seconds: Mapped[float] = mapped_column(Float)
    evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class EvaluatorStore(Protocol):
    """What the evaluator keeps: specs, versions, registrations waiting for their spec, results."""

    async def keep_spec(self, event: ModelSpecApplied) -> bool:
        """Keep the newest revision of a model's spec; False if an older one arrived late."""

    async def spec_of(self, model: str) -> ModelSpec | None:
        """The spec in force for a model, if any."""

    async def keep_version(self, event: ModelRegistered) -> None:
        """Remember a version's artifacts."""

    async def artifacts_of(self, model: str, version: int) -> list[ArtifactRef] | None:
        """A known version's artifacts."""

    async def park(self, event: ModelRegistered) -> None:
        """Hold a registration until its model's spec is known."""

    async def unpark(self, model: str) -> list[ModelRegistered]:
        """Take a model's parked registrations, oldest version first."""

    async def keep_result(self, event: ModelEvaluated, *, seconds: float) -> None:
        """Record an evaluation (the first one of a version stands)."""

    async def result_of(self, model: str, version: int) -> str | None:
        """The decision already taken for a version, if any."""


@dataclass(frozen=True)
class SqlStore(SqlSpecs):
    """The evaluator's tables, in the transaction of `session`."""

    specs: ClassVar[SpecView] = SPECS
    session: AsyncSession

    async def keep_version(self, event: ModelRegistered) -> None:
        """Remember a version's artifacts."""
        artifacts = [a.model_dump(mode="json") for a in event.artifacts]
        await self.session.execute(
            insert(VersionRow)
            .values(model=event.model, version=event.version, artifacts=artifacts)
            .on_conflict_do_nothing()
        )

    async def artifacts_of(self, model: str, version: int) -> list[ArtifactRef] | None:
        """A known version's artifacts."""
        row = await self.session.get(VersionRow, (model, version))
        return [ArtifactRef.model_validate(a) for a in row.artifacts] if row else None

    async def park(self, event: ModelRegistered) -> None:
        """Hold a registration until its model's spec is known."""
        await self.session.execute(
            insert(ParkedRow)
            .values(model=event.model, version=event.version, event=event.model_dump(mode="json"))
            .on_conflict_do_nothing()
        )

    async def unpark(self, model: str) -> list[ModelRegistered]:
        """Take a model's parked registrations, oldest version first."""
        rows = await self.session.scalars(delete(ParkedRow).where(ParkedRow.model == model).returning(ParkedRow.event))
        return sorted((ModelRegistered.model_validate(e) for e in rows), key=lambda e: e.version)

    async def keep_result(self, event: ModelEvaluated, *, seconds: float) -> None:
        """Record an evaluation (the first one of a version stands)."""
        await self.session.execute(
            insert(ResultRow)
            .values(
                model=event.model,
                version=event.version,
                decision=event.decision,
                passed=event.passed,
                champion_version=event.champion_version,
                gates=[g.model_dump(mode="json") for g in event.gates],
                seconds=seconds,
            )
            .on_conflict_do_nothing()
        )

    async def result_of(self, model: str, version: int) -> str | None:
        """The decision already taken for a version, if any."""
        return await self.session.scalar(
            select(ResultRow.decision).where(ResultRow.model == model, ResultRow.version == version)
        )
