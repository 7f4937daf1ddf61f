"""The registry's store: what each event and each operator's action changes, on top of its reads
(services.registry.queries); what leaves here is a domain value, never a row. `MemoryStore`
(services.registry.memory) is its in-memory twin for the handler tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from services.registry import domain
from services.registry.queries import SqlQueries
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
from shared.contract.events import (
    DataArrived,
    ModelEvaluated,
    ModelTrained,
    RolloutChanged,
    TrainingFailed,
    TrainingStarted,
)
from shared.contract.spec import ModelSpec
from shared.runtime.db import core_table


class RegistryStore(Protocol):
    """What the registry keeps, for its event handlers and its operators' commands (SqlStore, and
    its twin MemoryStore in services.registry.memory); the rules of what may change live in
    services.registry.domain and the handlers, not here. The store contract
    (tests/contracts/registry_store.py) runs on both."""

    async def record_dataset(self, event: DataArrived, *, event_id: str) -> tuple[str | None, str] | None:
        """Record a dataset version if it is new (None); if not, nothing changes: the digest and
        URI it was recorded with (the handler refuses another content under the same label)."""

    async def record_training_started(self, event: TrainingStarted) -> None:
        """Open the training run (or fill in its start if ModelTrained came first)."""

    async def record_training_failed(self, event: TrainingFailed) -> None:
        """Close the run as failed."""

    async def register_version(self, event: ModelTrained, *, event_id: str) -> tuple[domain.ModelVersion, bool]:
        """Give a trained model the next version number; returns (version, created)."""

    async def aliases_of(self, model: str) -> dict[str, int]:
        """Alias to version for one model."""

    async def get_version(self, model: str, version: int) -> domain.ModelVersion:
        """One version with its aliases and tags; raises NotFound."""

    async def status_of(self, model: str, version: int, *, lock: bool = False) -> str:
        """A version's status (locked until the transaction ends when `lock`); raises NotFound."""

    async def set_status(self, model: str, version: int, status: str, reason: str) -> None:
        """Write a version's status and why (the lifecycle's rule is the caller's: domain.can_move)."""

    async def park(self, model: str, version: int, status: str, reason: str) -> None:
        """Keep a status that arrived before the version's evaluation, to apply after it."""

    async def take_parked(self, model: str, version: int) -> tuple[str, str] | None:
        """The parked (status, reason) of a version, removed; None if there is none."""

    async def keep_evaluation(self, event: ModelEvaluated, *, event_id: str) -> None:
        """Keep an evaluation of a version."""

    async def keep_rollout(self, event: RolloutChanged, *, event_id: str) -> None:
        """Keep a rollout transition (and hold the model until the transaction ends)."""

    async def add_history(
        self,
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

    async def audit(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        target: str,
        reason: str = "",
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
        subject: str = "",
    ) -> int:
        """Append to the audit log; returns the entry's id."""

    async def get_model(self, name: str) -> domain.ModelSummary:
        """One model's summary; raises NotFound."""

    async def latest_spec(self, model: str) -> domain.SpecRevision:
        """The spec revision in force; raises NotFound."""

    async def get_dataset(self, name: str, version: str) -> domain.DatasetVersion:
        """One dataset version; raises NotFound."""

    async def set_alias(self, model: str, alias: str, version: int, *, by: str) -> None:
        """Point `alias` at a version (creating or moving it)."""

    async def drop_alias(self, model: str, alias: str) -> bool:
        """Remove an alias; False if there was none."""

    async def set_tag(self, model: str, version: int, key: str, value: str) -> None:
        """Set a tag on a version."""

    async def drop_tag(self, model: str, version: int, key: str) -> bool:
        """Remove a tag; False if there was none."""

    async def apply_spec(self, spec: ModelSpec, spec_yaml: str, *, applied_by: str) -> tuple[domain.SpecRevision, bool]:
        """Store a new spec revision; returns (revision, changed). An identical spec is not a new revision."""

    async def workspace_of(self, model: str) -> str | None:
        """The workspace that owns a model (None: no such model)."""

    async def workspaces_of_dataset(self, dataset: str) -> set[str]:
        """The workspaces of the models whose spec in force trains on a dataset."""


NOTIFY_CHANNEL = "modelbus_registry"


@dataclass(frozen=True)
class SqlStore(SqlQueries):
    """The registry's tables, in the transaction of `session`: its reads and its writes."""

    async def notify(self, model: str) -> None:
        """Tell every registry process that `model`'s aliases or versions changed (delivered on commit).

        Once per model and transaction is enough: PostgreSQL delivers notifications at commit.
        """
        notified: set[str] = self.session.info.setdefault("notified_models", set())
        if model not in notified:
            notified.add(model)
            await self.session.execute(
                text("SELECT pg_notify(:channel, :model)"), {"channel": NOTIFY_CHANNEL, "model": model}
            )

    async def lock_model(self, name: str) -> None:
        """Create the model if new and lock it until the transaction ends (serialises numbering)."""
        await self._locked_model(name)

    async def _locked_model(self, name: str) -> ModelRow:
        await self.session.execute(insert(ModelRow).values(name=name).on_conflict_do_nothing())
        row = await self.session.scalar(select(ModelRow).where(ModelRow.name == name).with_for_update())
        assert row is not None
        self.session.info.get("aliases", {}).pop(name, None)  # read them again under the lock
        return row

    async def set_alias(self, model: str, alias: str, version: int, *, by: str) -> None:
        """Point `alias` at a version (creating or moving it)."""
        stmt = insert(AliasRow).values(model=model, alias=alias, version=version, updated_by=by)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[AliasRow.model, AliasRow.alias],
                set_={"version": version, "updated_by": by, "updated_at": func.now()},
            )
        )
        self.session.info.get("aliases", {}).pop(model, None)
        await self.notify(model)

    async def drop_alias(self, model: str, alias: str) -> bool:
        """Remove an alias; False if there was none."""
        row = await self.session.get(AliasRow, (model, alias))
        if row is None:
            return False
        await self.session.delete(row)
        await self.session.flush()  # gone for the rest of the transaction too
        self.session.info.get("aliases", {}).pop(model, None)
        await self.notify(model)
        return True

    async def set_tag(self, model: str, version: int, key: str, value: str) -> None:
        """Set a tag on a version."""
        stmt = insert(TagRow).values(model=model, version=version, key=key, value=value)
        await self.session.execute(
            stmt.on_conflict_do_update(index_elements=[TagRow.model, TagRow.version, TagRow.key], set_={"value": value})
        )
        await self.notify(model)

    async def drop_tag(self, model: str, version: int, key: str) -> bool:
        """Remove a tag; False if there was none."""
        row = await self.session.get(TagRow, (model, version, key))
        if row is None:
            return False
        await self.session.delete(row)
        await self.session.flush()  # gone for the rest of the transaction too
        await self.notify(model)
        return True

    async def set_status(self, model: str, version: int, status: str, reason: str) -> None:
        """Write a version's status and why. Raises NotFound."""
        row = await self._version_row(model, version, lock=True)
        row.status, row.status_reason, row.updated_at = status, reason, func.now()
        await self.notify(model)

    async def park(self, model: str, version: int, status: str, reason: str) -> None:
        """Keep a status that arrived before the version's evaluation, to apply after it."""
        row = await self._version_row(model, version, lock=True)
        row.parked_status, row.parked_reason = status, reason

    async def take_parked(self, model: str, version: int) -> tuple[str, str] | None:
        """The parked (status, reason) of a version, removed; None if there is none."""
        row = await self._version_row(model, version, lock=True)
        if row.parked_status is None:
            return None
        parked = (row.parked_status, row.parked_reason or "")
        row.parked_status = row.parked_reason = None
        return parked

    async def add_history(
        self,
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
        await self.session.execute(
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
        self,
        *,
        actor: str,
        role: str,
        action: str,
        target: str,
        reason: str = "",
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
        subject: str = "",
    ) -> int:
        """Append to the audit log; returns the entry's id."""
        row = AuditRow(
            actor=actor,
            subject=subject,
            role=role,
            action=action,
            target=target,
            reason=reason,
            outcome=outcome,
            detail=detail or {},
        )
        self.session.add(row)
        await self.session.flush()
        return int(row.id)

    async def record_dataset(self, event: DataArrived, *, event_id: str) -> tuple[str | None, str] | None:
        """Record a dataset version if it is new (None); else the digest and URI it has."""
        existing = await self.session.get(DatasetRow, (event.dataset, event.version), with_for_update=True)
        if existing is not None:
            return existing.sha256, existing.uri
        # Events on different topics race: a model may have been trained on this data already.
        profile = await self.session.scalar(
            select(RunRow.profile)
            .where(
                RunRow.dataset == event.dataset,
                RunRow.dataset_version == event.version,
                RunRow.profile.is_not(None),
            )
            .limit(1)
        )
        # A Core insert runs now, so a ModelTrained later in the same batch finds the row.
        await self.session.execute(
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
                lineage=event.lineage.model_dump(mode="json") if event.lineage else None,
                event_id=event_id,
                arrived_at=event.occurred_at,
                profile=profile,
            )
        )
        return None

    async def record_training_started(self, event: TrainingStarted) -> None:
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
        await self.session.execute(stmt.on_conflict_do_update(index_elements=[RunRow.run_id], set_=values))

    async def record_training_failed(self, event: TrainingFailed) -> None:
        """Close the run as failed."""
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
        await self.session.execute(stmt.on_conflict_do_update(index_elements=[RunRow.run_id], set_=values))
        await self.lock_model(event.model)

    async def register_version(self, event: ModelTrained, *, event_id: str) -> tuple[domain.ModelVersion, bool]:
        """Give a trained model the next version number; returns (version, created).

        Taking the number locks the model's row, so concurrent registrations of one model (even from
        two registry processes) take numbers one after another; the number is taken in the same
        transaction as the version row, so a rollback leaves no gap. A run already registered (the
        same run delivered again under another event id) gives its number back and returns its version.
        """
        # Core statements on the tables (not ORM bulk inserts): this is the registry's hot path.
        models, versions, runs = core_table(ModelRow), core_table(VersionRow), core_table(RunRow)
        number = await self.session.scalar(
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
            "trigger": event.trigger,
            "features_from": event.features_from.model_dump(mode="json") if event.features_from else None,
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
            await self.session.execute(
                insert(versions)
                .values(**values)
                .on_conflict_do_nothing(index_elements=[versions.c.run_id])
                .returning(versions.c.created_at)
            )
        ).first()
        if stamps is None:
            # The run is registered already: give the number back and answer with its version.
            await self.session.execute(
                update(models).where(models.c.name == event.model).values(last_version=models.c.last_version - 1)
            )
            existing = await self.session.scalar(select(versions.c.version).where(versions.c.run_id == event.run_id))
            assert existing is not None
            return await self.get_version(event.model, existing), False
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
        await self.session.execute(
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
        profiled = self.session.info.setdefault("profiled_datasets", set())
        if (event.dataset, event.dataset_version) not in profiled:
            profiled.add((event.dataset, event.dataset_version))
            datasets = core_table(DatasetRow)
            await self.session.execute(
                update(datasets)
                .where(
                    datasets.c.name == event.dataset,
                    datasets.c.version == event.dataset_version,
                    datasets.c.profile.is_(None),
                )
                .values(profile=profile)
            )
        await self.notify(event.model)
        created = domain.ModelVersion(
            **values, aliases=[], tags={}, created_at=stamps.created_at, updated_at=stamps.created_at
        )
        return created, True

    async def keep_evaluation(self, event: ModelEvaluated, *, event_id: str) -> None:
        """Keep an evaluation of a version."""
        self.session.add(
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
        await self.notify(event.model)

    async def keep_rollout(self, event: RolloutChanged, *, event_id: str) -> None:
        """Keep a rollout transition, the model locked until the transaction ends."""
        await self.lock_model(event.model)
        self.session.add(
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

    async def apply_spec(self, spec: ModelSpec, spec_yaml: str, *, applied_by: str) -> tuple[domain.SpecRevision, bool]:
        """Store a new spec revision; returns (revision, changed). An identical spec is not a new revision."""
        model = await self._locked_model(spec.model)
        digest = spec.sha256()
        if model.spec_revision is not None:
            current = await self.session.get(SpecRow, (spec.model, model.spec_revision))
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
        self.session.add(row)
        model.spec_revision = revision
        model.workspace = spec.workspace
        model.updated_at = func.now()
        await self.session.flush()
        await self.session.refresh(row)
        return domain.SpecRevision.model_validate(row), True
