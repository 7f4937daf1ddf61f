"""The registry's tables and the queries on them; what leaves here is a domain value, never a row."""

from __future__ import annotations

from collections.abc import Sequence
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
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.registry import domain
from shared.contract.events import (
    DataArrived,
    ModelEvaluated,
    ModelRegistered,
    ModelTrained,
    RolloutChanged,
    TrainingFailed,
    TrainingStarted,
)
from shared.contract.refs import Ref
from shared.contract.spec import ModelSpec
from shared.runtime.db import Base, core_table

NOTIFY_CHANNEL = "modelbus_registry"


class ModelRow(Base):
    """A model: the counter its version numbers come from."""

    __tablename__ = "registry_models"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
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
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


# ---------------------------------------------------------------- rows to values


def _version(row: VersionRow, aliases: Sequence[str], tags: dict[str, str]) -> domain.ModelVersion:
    return domain.ModelVersion(
        model=row.model,
        version=row.version,
        status=row.status,
        status_reason=row.status_reason,
        run_id=row.run_id,
        task=row.task,
        estimator=row.estimator,
        params=row.params,
        metrics=row.metrics,
        artifacts=row.artifacts,
        manifest=row.manifest,
        dataset=row.dataset,
        dataset_version=row.dataset_version,
        code_version=row.code_version,
        spec_revision=row.spec_revision,
        aliases=sorted(aliases),
        tags=tags,
        correlation_id=row.correlation_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# ---------------------------------------------------------------- writes


async def notify(session: AsyncSession, model: str) -> None:
    """Tell every registry process that `model`'s aliases or versions changed (delivered on commit).

    Once per model and transaction is enough: PostgreSQL delivers notifications at commit.
    """
    notified: set[str] = session.info.setdefault("notified_models", set())
    if model not in notified:
        notified.add(model)
        await session.execute(text("SELECT pg_notify(:channel, :model)"), {"channel": NOTIFY_CHANNEL, "model": model})


async def lock_model(session: AsyncSession, name: str) -> ModelRow:
    """The model's row, created if new, locked until the transaction ends (serialises numbering)."""
    await session.execute(insert(ModelRow).values(name=name).on_conflict_do_nothing())
    row = await session.scalar(select(ModelRow).where(ModelRow.name == name).with_for_update())
    assert row is not None
    session.info.get("aliases", {}).pop(name, None)  # read them again under the lock
    return row


async def version_row(session: AsyncSession, model: str, version: int, *, lock: bool = False) -> VersionRow:
    """A version's row; raises NotFound."""
    query = select(VersionRow).where(VersionRow.model == model, VersionRow.version == version)
    row = await session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise domain.NotFound(f"{model}@{version} does not exist")
    return row


async def aliases_of(session: AsyncSession, model: str) -> dict[str, int]:
    """Alias to version for one model (read once per transaction, kept up to date by set/drop_alias)."""
    known: dict[str, dict[str, int]] = session.info.setdefault("aliases", {})
    if model not in known:
        rows = await session.execute(select(AliasRow.alias, AliasRow.version).where(AliasRow.model == model))
        known[model] = {alias: version for alias, version in rows.all()}
    return dict(known[model])


async def set_alias(session: AsyncSession, model: str, alias: str, version: int, *, by: str) -> None:
    """Point `alias` at a version (creating or moving it)."""
    stmt = insert(AliasRow).values(model=model, alias=alias, version=version, updated_by=by)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[AliasRow.model, AliasRow.alias],
            set_={"version": version, "updated_by": by, "updated_at": func.now()},
        )
    )
    session.info.get("aliases", {}).pop(model, None)
    await notify(session, model)


async def drop_alias(session: AsyncSession, model: str, alias: str) -> bool:
    """Remove an alias; False if there was none."""
    row = await session.get(AliasRow, (model, alias))
    if row is None:
        return False
    await session.delete(row)
    session.info.get("aliases", {}).pop(model, None)
    await notify(session, model)
    return True


async def set_tag(session: AsyncSession, model: str, version: int, key: str, value: str) -> None:
    """Set a tag on a version."""
    stmt = insert(TagRow).values(model=model, version=version, key=key, value=value)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[TagRow.model, TagRow.version, TagRow.key], set_={"value": value})
    )
    await notify(session, model)


async def drop_tag(session: AsyncSession, model: str, version: int, key: str) -> bool:
    """Remove a tag; False if there was none."""
    row = await session.get(TagRow, (model, version, key))
    if row is None:
        return False
    await session.delete(row)
    await notify(session, model)
    return True


async def set_status(session: AsyncSession, row: VersionRow, status: str, reason: str) -> bool:
    """Move a version to `status` if the lifecycle allows it; False if it does not."""
    if not domain.can_move(row.status, status):
        return False
    row.status, row.status_reason, row.updated_at = status, reason, func.now()
    await notify(session, row.model)
    return True


async def add_history(
    session: AsyncSession,
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
    await session.execute(
        insert(HistoryRow)
        .values(
            event_id=event_id,
            model=model,
            version=version,
            kind=kind,
            summary=summary,
            payload=payload,
            occurred_at=occurred_at,
        )
        .on_conflict_do_nothing()
    )


async def audit(
    session: AsyncSession,
    *,
    actor: str,
    role: str,
    action: str,
    target: str,
    reason: str = "",
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    """Append to the audit log."""
    session.add(
        AuditRow(
            actor=actor, role=role, action=action, target=target, reason=reason, outcome=outcome, detail=detail or {}
        )
    )


# ---------------------------------------------------------------- reads


async def get_version(session: AsyncSession, model: str, version: int) -> domain.ModelVersion:
    """One version with its aliases and tags; raises NotFound."""
    row = await version_row(session, model, version)
    aliases = [a for a, v in (await aliases_of(session, model)).items() if v == version]
    tags = await session.execute(
        select(TagRow.key, TagRow.value).where(TagRow.model == model, TagRow.version == version)
    )
    return _version(row, aliases, dict(tags.all()))


async def resolve(session: AsyncSession, ref: Ref) -> int:
    """The version number a reference names; raises NotFound."""
    if ref.version is not None:
        return ref.version
    if ref.alias is not None:
        version = await session.scalar(
            select(AliasRow.version).where(AliasRow.model == ref.model, AliasRow.alias == ref.alias)
        )
        if version is None:
            raise domain.NotFound(f"{ref.model} has no alias {ref.alias!r}")
        return version
    latest = await session.scalar(select(func.max(VersionRow.version)).where(VersionRow.model == ref.model))
    if latest is None:
        raise domain.NotFound(f"model {ref.model!r} has no versions")
    return int(latest)


async def list_versions(
    session: AsyncSession,
    *,
    model: str | None = None,
    status: str | None = None,
    alias: str | None = None,
    tag: tuple[str, str | None] | None = None,
    metric: domain.MetricFilter | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[domain.ModelVersion]:
    """Versions matching every filter given, newest first."""
    query = select(VersionRow)
    if model:
        query = query.where(VersionRow.model == model)
    if status:
        query = query.where(VersionRow.status == status)
    if alias:
        query = query.join(
            AliasRow, (AliasRow.model == VersionRow.model) & (AliasRow.version == VersionRow.version)
        ).where(AliasRow.alias == alias)
    if tag:
        query = query.join(TagRow, (TagRow.model == VersionRow.model) & (TagRow.version == VersionRow.version)).where(
            TagRow.key == tag[0]
        )
        if tag[1] is not None:
            query = query.where(TagRow.value == tag[1])
    if metric:
        value = VersionRow.metrics[metric.metric].as_float()
        comparisons = {
            ">=": value >= metric.value,
            "<=": value <= metric.value,
            ">": value > metric.value,
            "<": value < metric.value,
            "=": value == metric.value,
        }
        query = query.where(comparisons[metric.op])
    rows = (
        await session.scalars(
            query.order_by(VersionRow.created_at.desc(), VersionRow.version.desc()).limit(limit).offset(offset)
        )
    ).all()
    if not rows:
        return []
    models = {row.model for row in rows}
    alias_rows = (await session.execute(select(AliasRow).where(AliasRow.model.in_(models)))).scalars().all()
    tag_rows = (await session.execute(select(TagRow).where(TagRow.model.in_(models)))).scalars().all()
    by_version: dict[tuple[str, int], list[str]] = {}
    for a in alias_rows:
        by_version.setdefault((a.model, a.version), []).append(a.alias)
    tags: dict[tuple[str, int], dict[str, str]] = {}
    for t in tag_rows:
        tags.setdefault((t.model, t.version), {})[t.key] = t.value
    return [
        _version(row, by_version.get((row.model, row.version), []), tags.get((row.model, row.version), {}))
        for row in rows
    ]


async def list_models(session: AsyncSession, *, name_contains: str | None = None) -> list[domain.ModelSummary]:
    """Every model with its aliases, spec and version counts."""
    query = select(ModelRow).order_by(ModelRow.name)
    if name_contains:
        query = query.where(ModelRow.name.contains(name_contains, autoescape=True))
    models = (await session.scalars(query)).all()
    counts = await session.execute(
        select(VersionRow.model, VersionRow.status, func.count()).group_by(VersionRow.model, VersionRow.status)
    )
    statuses: dict[str, dict[str, int]] = {}
    for model, status, count in counts.all():
        statuses.setdefault(model, {})[status] = count
    aliases: dict[str, dict[str, int]] = {}
    for row in (await session.scalars(select(AliasRow))).all():
        aliases.setdefault(row.model, {})[row.alias] = row.version
    specs = {
        row.model: row
        for row in (
            await session.scalars(
                select(SpecRow).join(
                    ModelRow, (ModelRow.name == SpecRow.model) & (ModelRow.spec_revision == SpecRow.revision)
                )
            )
        ).all()
    }
    return [
        domain.ModelSummary(
            name=m.name,
            latest_version=m.last_version,
            aliases=aliases.get(m.name, {}),
            spec_revision=m.spec_revision,
            dataset=specs[m.name].dataset if m.name in specs else None,
            task=specs[m.name].spec.get("task") if m.name in specs else None,
            statuses=statuses.get(m.name, {}),
            updated_at=m.updated_at,
        )
        for m in models
    ]


async def get_model(session: AsyncSession, name: str) -> domain.ModelSummary:
    """One model's summary; raises NotFound."""
    found = [m for m in await list_models(session, name_contains=name) if m.name == name]
    if not found:
        raise domain.NotFound(f"model {name!r} does not exist")
    return found[0]


async def latest_spec(session: AsyncSession, model: str) -> domain.SpecRevision:
    """The spec revision in force; raises NotFound."""
    row = await session.scalar(select(SpecRow).where(SpecRow.model == model).order_by(SpecRow.revision.desc()).limit(1))
    if row is None:
        raise domain.NotFound(f"no spec applied for model {model!r}")
    return domain.SpecRevision.model_validate(row)


async def spec_revisions(session: AsyncSession, model: str) -> list[domain.SpecRevision]:
    """Every applied revision of a model's spec, newest first."""
    rows = await session.scalars(select(SpecRow).where(SpecRow.model == model).order_by(SpecRow.revision.desc()))
    return [domain.SpecRevision.model_validate(row) for row in rows.all()]


async def get_dataset(session: AsyncSession, name: str, version: str) -> domain.DatasetVersion:
    """One dataset version; raises NotFound."""
    row = await session.get(DatasetRow, (name, version))
    if row is None:
        raise domain.NotFound(f"dataset {name}@{version} does not exist")
    return domain.DatasetVersion.model_validate(row)


async def list_datasets(
    session: AsyncSession, *, name: str | None = None, limit: int = 100
) -> list[domain.DatasetVersion]:
    """Dataset versions, newest first."""
    query = select(DatasetRow)
    if name:
        query = query.where(DatasetRow.name == name)
    rows = await session.scalars(query.order_by(DatasetRow.arrived_at.desc()).limit(limit))
    return [domain.DatasetVersion.model_validate(row) for row in rows.all()]


async def lineage(session: AsyncSession, model: str, version: int) -> domain.Lineage:
    """A version's whole chain; raises NotFound."""
    found = await get_version(session, model, version)
    dataset = await session.get(DatasetRow, (found.dataset, found.dataset_version))
    run = await session.get(RunRow, found.run_id)
    spec = await session.get(SpecRow, (model, found.spec_revision))
    evaluations = await session.scalars(
        select(EvaluationRow)
        .where(EvaluationRow.model == model, EvaluationRow.version == version)
        .order_by(EvaluationRow.evaluated_at)
    )
    rollouts = await session.scalars(
        select(RolloutRow)
        .where(RolloutRow.model == model, RolloutRow.candidate_version == version)
        .order_by(RolloutRow.occurred_at)
    )
    history = await session.scalars(
        select(HistoryRow)
        .where(HistoryRow.model == model, HistoryRow.version == version)
        .order_by(HistoryRow.occurred_at)
    )
    return domain.Lineage(
        version=found,
        dataset=domain.DatasetVersion.model_validate(dataset) if dataset else None,
        run=domain.TrainingRun.model_validate(run) if run else None,
        spec=domain.SpecRevision.model_validate(spec) if spec else None,
        evaluations=[domain.Evaluation.model_validate(r) for r in evaluations.all()],
        rollouts=[domain.RolloutStep.model_validate(r) for r in rollouts.all()],
        history=[domain.HistoryItem.model_validate(r) for r in history.all()],
    )


async def model_history(
    session: AsyncSession, model: str, *, kind: str | None = None, limit: int = 200
) -> tuple[list[domain.RolloutStep], list[domain.HistoryItem]]:
    """A model's rollout transitions and other lifecycle events, newest first."""
    rollouts = await session.scalars(
        select(RolloutRow).where(RolloutRow.model == model).order_by(RolloutRow.occurred_at.desc()).limit(limit)
    )
    query = select(HistoryRow).where(HistoryRow.model == model)
    if kind:
        query = query.where(HistoryRow.kind == kind)
    history = await session.scalars(query.order_by(HistoryRow.occurred_at.desc()).limit(limit))
    return [domain.RolloutStep.model_validate(r) for r in rollouts.all()], [
        domain.HistoryItem.model_validate(r) for r in history.all()
    ]


async def audit_log(
    session: AsyncSession,
    *,
    target: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[domain.AuditEntry]:
    """Audit entries, newest first; `target` matches a model and all its versions."""
    query = select(AuditRow)
    if target:
        query = query.where((AuditRow.target == target) | AuditRow.target.startswith(f"{target}@", autoescape=True))
    if actor:
        query = query.where(AuditRow.actor == actor)
    if action:
        query = query.where(AuditRow.action == action)
    rows = await session.scalars(query.order_by(AuditRow.id.desc()).limit(limit))
    return [domain.AuditEntry.model_validate(row) for row in rows.all()]


# ---------------------------------------------------------------- what each event changes


async def record_dataset(session: AsyncSession, event: DataArrived, *, event_id: str) -> bool:
    """Record a dataset version; False if it was already recorded with the same digest.

    Raises RegistryRefusal when the version exists with a different digest or URI: a version
    label names one content forever.
    """
    existing = await session.get(DatasetRow, (event.dataset, event.version), with_for_update=True)
    if existing is not None:
        if existing.sha256 != event.sha256 or existing.uri != event.uri:
            raise domain.RegistryRefusal(
                f"dataset {event.dataset}@{event.version} is already recorded with sha256 "
                f"{existing.sha256} at {existing.uri}; this event says sha256 {event.sha256} at {event.uri}. "
                "A version label names one content: publish a new version instead"
            )
        return False
    # Events on different topics race: a model may have been trained on this data already.
    profile = await session.scalar(
        select(RunRow.profile)
        .where(
            RunRow.dataset == event.dataset,
            RunRow.dataset_version == event.version,
            RunRow.profile.is_not(None),
        )
        .limit(1)
    )
    # A Core insert runs now, so a ModelTrained later in the same batch finds the row.
    await session.execute(
        insert(core_table(DatasetRow)).values(
            name=event.dataset,
            version=event.version,
            uri=event.uri,
            sha256=event.sha256,
            format=event.format,
            row_count=event.row_count,
            size_bytes=event.size_bytes,
            columns=event.columns,
            producer=event.producer,
            event_id=event_id,
            arrived_at=event.occurred_at,
            profile=profile,
        )
    )
    return True


async def record_training_started(session: AsyncSession, event: TrainingStarted) -> None:
    """Open the training run (or fill in its start if ModelTrained came first)."""
    values = {
        "model": event.model,
        "trigger": event.trigger,
        "dataset": event.dataset,
        "dataset_version": event.dataset_version,
        "spec_revision": event.spec_revision,
        "code_version": event.code_version,
        "started_at": event.occurred_at,
    }
    stmt = insert(RunRow).values(run_id=event.run_id, status="running", candidates=event.candidates, **values)
    await session.execute(stmt.on_conflict_do_update(index_elements=[RunRow.run_id], set_=values))


async def record_training_failed(session: AsyncSession, event: TrainingFailed, *, event_id: str) -> None:
    """Close the run as failed and keep the failure in the model's history."""
    failure = event.model_dump(mode="json", include={"stage", "reason", "violations", "attempts"})
    values = {"status": "failed", "failure": failure, "finished_at": event.occurred_at}
    stmt = insert(RunRow).values(
        run_id=event.run_id,
        model=event.model,
        dataset=event.dataset,
        dataset_version=event.dataset_version,
        candidates=[],
        **values,
    )
    await session.execute(stmt.on_conflict_do_update(index_elements=[RunRow.run_id], set_=values))
    await lock_model(session, event.model)
    await add_history(
        session,
        event_id=event_id,
        model=event.model,
        version=None,
        kind="TrainingFailed",
        summary=f"training {event.run_id} failed at {event.stage}: {event.reason}",
        payload=event.model_dump(mode="json"),
        occurred_at=event.occurred_at,
    )


async def register_version(
    session: AsyncSession, event: ModelTrained, *, event_id: str
) -> tuple[domain.ModelVersion, bool]:
    """Give a trained model the next version number; returns (version, created).

    Taking the number locks the model's row, so concurrent registrations of one model (even from
    two registry processes) take numbers one after another; the number is taken in the same
    transaction as the version row, so a rollback leaves no gap. A run already registered (the
    same run delivered again under another event id) gives its number back and returns its version.
    """
    # Core statements on the tables (not ORM bulk inserts): this is the registry's hot path.
    models, versions, runs = core_table(ModelRow), core_table(VersionRow), core_table(RunRow)
    number = await session.scalar(
        insert(models)
        .values(name=event.model, last_version=1)
        .on_conflict_do_update(
            index_elements=[models.c.name],
            set_={"last_version": models.c.last_version + 1, "updated_at": func.now()},
        )
        .returning(models.c.last_version)
    )
    assert number is not None
    manifest = {
        "feature_schema": [f.model_dump(mode="json") for f in event.feature_schema],
        "data_sha256": event.data_sha256,
        "target": event.target,
        "candidates": [c.model_dump(mode="json") for c in event.candidates],
        "training_seconds": event.training_seconds,
    }
    values: dict[str, Any] = {
        "model": event.model,
        "version": number,
        "run_id": event.run_id,
        "status": "registered",
        "status_reason": "trained and registered",
        "task": event.task,
        "estimator": event.estimator,
        "params": dict(event.params),
        "metrics": dict(event.metrics),
        "artifacts": [a.model_dump(mode="json") for a in event.artifacts],
        "manifest": manifest,
        "dataset": event.dataset,
        "dataset_version": event.dataset_version,
        "code_version": event.code_version,
        "spec_revision": event.spec_revision,
        "correlation_id": event.correlation_id,
        "event_id": event_id,
    }
    stamps = (
        await session.execute(
            insert(versions)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[versions.c.run_id])
            .returning(versions.c.created_at)
        )
    ).first()
    if stamps is None:
        # The run is registered already: give the number back and answer with its version.
        await session.execute(
            update(models).where(models.c.name == event.model).values(last_version=models.c.last_version - 1)
        )
        existing = await session.scalar(select(versions.c.version).where(versions.c.run_id == event.run_id))
        assert existing is not None
        return await get_version(session, event.model, existing), False
    profile = event.reference_profile.model_dump(mode="json")
    run_values = {
        "profile": profile,
        "status": "succeeded",
        "candidates": manifest["candidates"],
        "training_seconds": event.training_seconds,
        "finished_at": event.occurred_at,
        "spec_revision": event.spec_revision,
        "code_version": event.code_version,
    }
    await session.execute(
        insert(runs)
        .values(
            run_id=event.run_id,
            model=event.model,
            dataset=event.dataset,
            dataset_version=event.dataset_version,
            **run_values,
        )
        .on_conflict_do_update(index_elements=[runs.c.run_id], set_=run_values)
    )
    profiled = session.info.setdefault("profiled_datasets", set())
    if (event.dataset, event.dataset_version) not in profiled:
        profiled.add((event.dataset, event.dataset_version))
        datasets = core_table(DatasetRow)
        await session.execute(
            update(datasets)
            .where(
                datasets.c.name == event.dataset,
                datasets.c.version == event.dataset_version,
                datasets.c.profile.is_(None),
            )
            .values(profile=profile)
        )
    await notify(session, event.model)
    created = domain.ModelVersion(
        **values, aliases=[], tags={}, created_at=stamps.created_at, updated_at=stamps.created_at
    )
    return created, True


async def mark_evaluating(session: AsyncSession, event: ModelRegistered) -> None:
    """The version has been handed to the evaluator (unless something later already happened)."""
    moved = await session.execute(
        update(VersionRow)
        .where(
            VersionRow.model == event.model,
            VersionRow.version == event.version,
            VersionRow.status == "registered",
        )
        .values(status="evaluating", status_reason="handed to the evaluator", updated_at=func.now())
    )
    if moved.rowcount:  # type: ignore[attr-defined]
        await notify(session, event.model)


async def record_evaluation(session: AsyncSession, event: ModelEvaluated, *, event_id: str) -> bool:
    """Keep the evaluation and move the version's status; False if the status could not move."""
    row = await version_row(session, event.model, event.version, lock=True)
    session.add(
        EvaluationRow(
            event_id=event_id,
            model=event.model,
            version=event.version,
            decision=event.decision,
            passed=event.passed,
            champion_version=event.champion_version,
            gates=[g.model_dump(mode="json") for g in event.gates],
            metrics=dict(event.metrics),
            champion_metrics=dict(event.champion_metrics),
            test_rows=event.test_rows,
            evaluated_at=event.occurred_at,
        )
    )
    failed = [g.name for g in event.gates if not g.passed]
    reason = f"evaluation: {event.decision}" + (f" (failed gates: {', '.join(failed)})" if failed else "")
    moved = await set_status(session, row, domain.status_after_evaluation(event.decision), reason)
    await notify(session, event.model)
    return moved


async def record_rollout(session: AsyncSession, event: RolloutChanged, *, event_id: str) -> domain.RolloutEffects:
    """Keep the transition and move aliases and statuses as the rollout says."""
    await lock_model(session, event.model)
    session.add(
        RolloutRow(
            event_id=event_id,
            model=event.model,
            rollout_id=event.rollout_id,
            candidate_version=event.candidate_version,
            stable_version=event.stable_version,
            from_state=event.from_state,
            to_state=event.to_state,
            step=event.step,
            traffic=[t.model_dump(mode="json") for t in event.traffic],
            reason=event.reason,
            evidence=dict(event.evidence),
            actor=event.actor,
            occurred_at=event.occurred_at,
        )
    )
    effects = domain.rollout_effects(event, await aliases_of(session, event.model))
    for version, (status, reason) in effects.statuses.items():
        await set_status(session, await version_row(session, event.model, version, lock=True), status, reason)
    for alias in effects.drop_aliases - set(effects.set_aliases):
        await drop_alias(session, event.model, alias)
    for alias, version in effects.set_aliases.items():
        await version_row(session, event.model, version)
        await set_alias(session, event.model, alias, version, by=f"rollout {event.rollout_id}")
    return effects


async def apply_spec(
    session: AsyncSession, spec: ModelSpec, spec_yaml: str, *, applied_by: str
) -> tuple[domain.SpecRevision, bool]:
    """Store a new spec revision; returns (revision, changed). An identical spec is not a new revision."""
    model = await lock_model(session, spec.model)
    digest = spec.sha256()
    if model.spec_revision is not None:
        current = await session.get(SpecRow, (spec.model, model.spec_revision))
        if current is not None and current.sha256 == digest:
            return domain.SpecRevision.model_validate(current), False
    revision = (model.spec_revision or 0) + 1
    row = SpecRow(
        model=spec.model,
        revision=revision,
        sha256=digest,
        spec=spec.model_dump(mode="json"),
        spec_yaml=spec_yaml,
        dataset=spec.dataset,
        applied_by=applied_by,
    )
    session.add(row)
    model.spec_revision = revision
    model.updated_at = func.now()
    await session.flush()
    await session.refresh(row)
    return domain.SpecRevision.model_validate(row), True
