"""The registry's reads: versions, models, specs, datasets, lineage, history and the audit log, as
domain values (what the HTTP API answers). `SqlStore` (services.registry.store) adds the writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry import domain
from services.registry.tables import (
    AliasRow,
    AuditRow,
    DatasetRow,
    EvaluationRow,
    HistoryRow,
    ModelRow,
    RolloutRow,
    RunRow,
    SpecRow,
    TagRow,
    VersionRow,
)
from shared.contract.refs import Ref


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


# ---------------------------------------------------------------- reads


# ---------------------------------------------------------------- what each event changes


@dataclass(frozen=True)
class SqlQueries:
    """Reads of the registry's tables, in the transaction of `session`."""

    session: AsyncSession

    async def status_of(self, model: str, version: int, *, lock: bool = False) -> str:
        """A version's status; raises NotFound."""
        return (await self._version_row(model, version, lock=lock)).status

    async def _version_row(self, model: str, version: int, *, lock: bool = False) -> VersionRow:
        """A version's row; raises NotFound."""
        query = select(VersionRow).where(VersionRow.model == model, VersionRow.version == version)
        row = await self.session.scalar(query.with_for_update() if lock else query)
        if row is None:
            raise domain.NotFound(f"{model}@{version} does not exist")
        return row

    async def aliases_of(self, model: str) -> dict[str, int]:
        """Alias to version for one model (read once per transaction, kept up to date by set/drop_alias)."""
        known: dict[str, dict[str, int]] = self.session.info.setdefault("aliases", {})
        if model not in known:
            rows = await self.session.execute(select(AliasRow.alias, AliasRow.version).where(AliasRow.model == model))
            known[model] = {alias: version for alias, version in rows.all()}
        return dict(known[model])

    async def get_version(self, model: str, version: int) -> domain.ModelVersion:
        """One version with its aliases and tags; raises NotFound."""
        row = await self._version_row(model, version)
        aliases = [a for a, v in (await self.aliases_of(model)).items() if v == version]
        tags = await self.session.execute(
            select(TagRow.key, TagRow.value).where(TagRow.model == model, TagRow.version == version)
        )
        return _version(row, aliases, dict(tags.all()))

    async def resolve(self, ref: Ref) -> int:
        """The version number a reference names; raises NotFound."""
        if ref.version is not None:
            return ref.version
        if ref.alias is not None:
            version = await self.session.scalar(
                select(AliasRow.version).where(AliasRow.model == ref.model, AliasRow.alias == ref.alias)
            )
            if version is None:
                raise domain.NotFound(f"{ref.model} has no alias {ref.alias!r}")
            return version
        latest = await self.session.scalar(select(func.max(VersionRow.version)).where(VersionRow.model == ref.model))
        if latest is None:
            raise domain.NotFound(f"model {ref.model!r} has no versions")
        return int(latest)

    async def list_versions(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        alias: str | None = None,
        tag: tuple[str, str | None] | None = None,
        metric: domain.MetricFilter | None = None,
        limit: int = 100,
        offset: int = 0,
        workspaces: frozenset[str] | None = None,
    ) -> list[domain.ModelVersion]:
        """Versions matching every filter given (of models in these workspaces; None: all), newest first."""
        query = select(VersionRow)
        if workspaces is not None:
            query = query.where(VersionRow.model.in_(_models_in(workspaces)))
        if model:
            query = query.where(VersionRow.model == model)
        if status:
            query = query.where(VersionRow.status == status)
        if alias:
            query = query.join(
                AliasRow, (AliasRow.model == VersionRow.model) & (AliasRow.version == VersionRow.version)
            ).where(AliasRow.alias == alias)
        if tag:
            query = query.join(
                TagRow, (TagRow.model == VersionRow.model) & (TagRow.version == VersionRow.version)
            ).where(TagRow.key == tag[0])
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
            await self.session.scalars(
                query.order_by(VersionRow.created_at.desc(), VersionRow.version.desc()).limit(limit).offset(offset)
            )
        ).all()
        if not rows:
            return []
        models = {row.model for row in rows}
        alias_rows = (await self.session.execute(select(AliasRow).where(AliasRow.model.in_(models)))).scalars().all()
        tag_rows = (await self.session.execute(select(TagRow).where(TagRow.model.in_(models)))).scalars().all()
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

    async def workspace_of(self, model: str) -> str | None:
        """The workspace that owns a model (None: no such model)."""
        found: str | None = await self.session.scalar(select(ModelRow.workspace).where(ModelRow.name == model))
        return found

    async def workspaces_of_dataset(self, dataset: str) -> set[str]:
        """The workspaces of the models whose spec in force trains on a dataset."""
        found = await self.session.scalars(
            select(ModelRow.workspace)
            .join(SpecRow, (SpecRow.model == ModelRow.name) & (SpecRow.revision == ModelRow.spec_revision))
            .where(SpecRow.dataset == dataset)
            .distinct()
        )
        return set(found.all())

    async def list_models(
        self, *, name_contains: str | None = None, workspaces: frozenset[str] | None = None
    ) -> list[domain.ModelSummary]:
        """Every model (of these workspaces; None: all) with its aliases, spec and version counts."""
        query = select(ModelRow).order_by(ModelRow.name)
        if workspaces is not None:
            query = query.where(ModelRow.workspace.in_(sorted(workspaces)))
        if name_contains:
            query = query.where(ModelRow.name.contains(name_contains, autoescape=True))
        models = (await self.session.scalars(query)).all()
        counts = await self.session.execute(
            select(VersionRow.model, VersionRow.status, func.count()).group_by(VersionRow.model, VersionRow.status)
        )
        statuses: dict[str, dict[str, int]] = {}
        for model, status, count in counts.all():
            statuses.setdefault(model, {})[status] = count
        aliases: dict[str, dict[str, int]] = {}
        for row in (await self.session.scalars(select(AliasRow))).all():
            aliases.setdefault(row.model, {})[row.alias] = row.version
        specs = {
            row.model: row
            for row in (
                await self.session.scalars(
                    select(SpecRow).join(
                        ModelRow, (ModelRow.name == SpecRow.model) & (ModelRow.spec_revision == SpecRow.revision)
                    )
                )
            ).all()
        }
        return [
            domain.ModelSummary(
                name=m.name,
                workspace=m.workspace,
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

    async def get_model(self, name: str) -> domain.ModelSummary:
        """One model's summary; raises NotFound."""
        found = [m for m in await self.list_models(name_contains=name) if m.name == name]
        if not found:
            raise domain.NotFound(f"model {name!r} does not exist")
        return found[0]

    async def latest_spec(self, model: str) -> domain.SpecRevision:
        """The spec revision in force; raises NotFound."""
        row = await self.session.scalar(
            select(SpecRow).where(SpecRow.model == model).order_by(SpecRow.revision.desc()).limit(1)
        )
        if row is None:
            raise domain.NotFound(f"no spec applied for model {model!r}")
        return domain.SpecRevision.model_validate(row)

    async def spec_revisions(self, model: str) -> list[domain.SpecRevision]:
        """Every applied revision of a model's spec, newest first."""
        rows = await self.session.scalars(
            select(SpecRow).where(SpecRow.model == model).order_by(SpecRow.revision.desc())
        )
        return [domain.SpecRevision.model_validate(row) for row in rows.all()]

    async def get_dataset(self, name: str, version: str) -> domain.DatasetVersion:
        """One dataset version; raises NotFound."""
        row = await self.session.get(DatasetRow, (name, version))
        if row is None:
            raise domain.NotFound(f"dataset {name}@{version} does not exist")
        return domain.DatasetVersion.model_validate(row)

    async def list_datasets(self, *, name: str | None = None, limit: int = 100) -> list[domain.DatasetVersion]:
        """Dataset versions, newest first."""
        query = select(DatasetRow)
        if name:
            query = query.where(DatasetRow.name == name)
        rows = await self.session.scalars(query.order_by(DatasetRow.arrived_at.desc()).limit(limit))
        return [domain.DatasetVersion.model_validate(row) for row in rows.all()]

    async def lineage(self, model: str, version: int) -> domain.Lineage:
        """A version's whole chain; raises NotFound."""
        found = await self.get_version(model, version)
        dataset = await self.session.get(DatasetRow, (found.dataset, found.dataset_version))
        run = await self.session.get(RunRow, found.run_id)
        spec = await self.session.get(SpecRow, (model, found.spec_revision))
        evaluations = await self.session.scalars(
            select(EvaluationRow)
            .where(EvaluationRow.model == model, EvaluationRow.version == version)
            .order_by(EvaluationRow.evaluated_at)
        )
        rollouts = await self.session.scalars(
            select(RolloutRow)
            .where(RolloutRow.model == model, RolloutRow.candidate_version == version)
            .order_by(RolloutRow.occurred_at)
        )
        history = await self.session.scalars(
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
        self, model: str, *, kind: str | None = None, limit: int = 200
    ) -> tuple[list[domain.RolloutStep], list[domain.HistoryItem]]:
        """A model's rollout transitions and other lifecycle events, newest first."""
        rollouts = await self.session.scalars(
            select(RolloutRow).where(RolloutRow.model == model).order_by(RolloutRow.occurred_at.desc()).limit(limit)
        )
        query = select(HistoryRow).where(HistoryRow.model == model)
        if kind:
            query = query.where(HistoryRow.kind == kind)
        history = await self.session.scalars(query.order_by(HistoryRow.occurred_at.desc()).limit(limit))
        return [domain.RolloutStep.model_validate(r) for r in rollouts.all()], [
            domain.HistoryItem.model_validate(r) for r in history.all()
        ]

    async def audit_log(
        self,
        *,
        target: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 100,
        workspaces: frozenset[str] | None = None,
    ) -> list[domain.AuditEntry]:
        """Audit entries, newest first; `target` matches a model and all its versions; with
        `workspaces`, only entries on models of those workspaces."""
        query = select(AuditRow)
        if workspaces is not None:
            query = query.where(func.split_part(AuditRow.target, "@", 1).in_(_models_in(workspaces)))
        if target:
            query = query.where((AuditRow.target == target) | AuditRow.target.startswith(f"{target}@", autoescape=True))
        if actor:
            query = query.where(AuditRow.actor == actor)
        if action:
            query = query.where(AuditRow.action == action)
        rows = await self.session.scalars(query.order_by(AuditRow.id.desc()).limit(limit))
        return [domain.AuditEntry.model_validate(row) for row in rows.all()]


def _models_in(workspaces: frozenset[str]) -> Select[Any]:
    """The names of the models of these workspaces (a subquery)."""
    return select(ModelRow.name).where(ModelRow.workspace.in_(sorted(workspaces)))
