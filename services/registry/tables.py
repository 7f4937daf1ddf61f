"""The registry's tables (SQLAlchemy typed mappings); only its store reads and writes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.runtime.db import Base


class ModelRow(Base):
    """A model: the workspace that owns it, and the counter its version numbers come from."""

    __tablename__ = "registry_models"
    __table_args__ = (Index("ix_registry_models_workspace", "workspace", "name"),)

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(128), default="default", server_default="default")
    last_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    spec_revision: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SpecRow(Base):
    """Every applied revision of a model spec, with its YAML."""

    __tablename__ = "registry_specs"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    spec_yaml: Mapped[str] = mapped_column(Text)
    dataset: Mapped[str] = mapped_column(String(128), index=True)
    applied_by: Mapped[str] = mapped_column(String(200))
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DatasetRow(Base):
    """A version of a dataset, as a producer announced it."""

    __tablename__ = "registry_datasets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    row_count: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    columns: Mapped[dict[str, str] | None] = mapped_column(JSONB(none_as_null=True))
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    producer: Mapped[str] = mapped_column(String(200))
    lineage: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))  # production feedback
    event_id: Mapped[str] = mapped_column(String(200))
    arrived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunRow(Base):
    """A training run, from TrainingStarted to ModelTrained or TrainingFailed."""

    __tablename__ = "registry_runs"

    run_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str | None] = mapped_column(String(32))
    dataset: Mapped[str] = mapped_column(String(128))
    dataset_version: Mapped[str] = mapped_column(String(128))
    spec_revision: Mapped[int | None] = mapped_column(Integer)
    code_version: Mapped[str | None] = mapped_column(String(200))
    candidates: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    training_seconds: Mapped[float | None] = mapped_column(Float)
    failure: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    # The training data's profile (ModelTrained's reference profile), for a dataset recorded later.
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class VersionRow(Base):
    """A model version: its artifacts, numbers and status."""

    __tablename__ = "registry_versions"
    __table_args__ = (Index("ix_registry_versions_status", "model", "status"),)

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(32))
    status_reason: Mapped[str] = mapped_column(Text, default="")
    # A rollout's status that came before the version's evaluation, applied once it is recorded.
    parked_status: Mapped[str | None] = mapped_column(String(32))
    parked_reason: Mapped[str | None] = mapped_column(Text)
    task: Mapped[str] = mapped_column(String(32))
    estimator: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    metrics: Mapped[dict[str, float]] = mapped_column(JSONB)
    artifacts: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONB)
    dataset: Mapped[str] = mapped_column(String(128))
    dataset_version: Mapped[str] = mapped_column(String(128))
    code_version: Mapped[str] = mapped_column(String(200))
    spec_revision: Mapped[int] = mapped_column(Integer)
    correlation_id: Mapped[str] = mapped_column(String(200))
    event_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AliasRow(Base):
    """An alias (champion, challenger or an operator's) pointing at a version."""

    __tablename__ = "registry_aliases"
    __table_args__ = (
        ForeignKeyConstraint(["model", "version"], ["registry_versions.model", "registry_versions.version"]),
    )

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TagRow(Base):
    """A tag on a version."""

    __tablename__ = "registry_tags"
    __table_args__ = (
        ForeignKeyConstraint(["model", "version"], ["registry_versions.model", "registry_versions.version"]),
    )

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(1000))


class EvaluationRow(Base):
    """An evaluation of a version against the champion."""

    __tablename__ = "registry_evaluations"
    __table_args__ = (Index("ix_registry_evaluations_version", "model", "version"),)

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(32))
    passed: Mapped[bool] = mapped_column(Boolean)
    champion_version: Mapped[int | None] = mapped_column(Integer)
    gates: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    metrics: Mapped[dict[str, float]] = mapped_column(JSONB)
    champion_metrics: Mapped[dict[str, float]] = mapped_column(JSONB)
    test_rows: Mapped[int] = mapped_column(Integer)
    evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RolloutRow(Base):
    """One rollout transition (the rollout history)."""

    __tablename__ = "registry_rollouts"
    __table_args__ = (Index("ix_registry_rollouts_model", "model", "occurred_at"),)

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    rollout_id: Mapped[str] = mapped_column(String(200))
    candidate_version: Mapped[int] = mapped_column(Integer)
    stable_version: Mapped[int | None] = mapped_column(Integer)
    from_state: Mapped[str] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer)
    traffic: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    reason: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, float]] = mapped_column(JSONB)
    actor: Mapped[str] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HistoryRow(Base):
    """Drift, performance, alert, failure and command events about a model."""

    __tablename__ = "registry_history"
    __table_args__ = (Index("ix_registry_history_model", "model", "occurred_at"),)

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditRow(Base):
    """Who did what, to what, why, and whether it was done."""

    __tablename__ = "registry_audit"
    __table_args__ = (Index("ix_registry_audit_target", "target", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(300), default="", server_default="")
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


# ---------------------------------------------------------------- rows to values
