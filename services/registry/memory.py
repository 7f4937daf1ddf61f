"""The registry's store in dictionaries: the twin of SqlStore for the handler tests (the same rules,
from services.registry.domain; one contract test runs on both)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.registry import domain
from shared.contract.events import (
    DataArrived,
    ModelEvaluated,
    ModelTrained,
    RolloutChanged,
    TrainingFailed,
    TrainingStarted,
)
from shared.contract.spec import ModelSpec


@dataclass
class MemoryStore:
    """What the registry's handlers change, kept in memory."""

    datasets: dict[tuple[str, str], DataArrived] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[tuple[str, int], domain.ModelVersion] = field(default_factory=dict)
    numbers: dict[str, int] = field(default_factory=dict)
    aliases: dict[str, dict[str, int]] = field(default_factory=dict)
    evaluations: dict[str, ModelEvaluated] = field(default_factory=dict)
    rollouts: dict[str, RolloutChanged] = field(default_factory=dict)
    history: dict[str, tuple[str, domain.HistoryItem]] = field(default_factory=dict)
    parked: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)  # status a rollout set early
    specs: dict[str, list[domain.SpecRevision]] = field(default_factory=dict)  # revisions, oldest first
    audits: list[domain.AuditEntry] = field(default_factory=list)

    async def record_dataset(self, event: DataArrived, *, event_id: str) -> tuple[str | None, str] | None:
        """Record a dataset version if it is new (None); else the digest and URI it has."""
        existing = self.datasets.get((event.dataset, event.version))
        if existing is not None:
            return existing.sha256, existing.uri
        self.datasets[(event.dataset, event.version)] = event
        return None

    async def record_training_started(self, event: TrainingStarted) -> None:
        """Open the training run (or fill in its start if ModelTrained came first)."""
        run = self.runs.setdefault(event.run_id, {"status": "running"})
        run.update(model=event.model, trigger=event.trigger, started_at=event.occurred_at)

    async def record_training_failed(self, event: TrainingFailed) -> None:
        """Close the run as failed."""
        self.runs.setdefault(event.run_id, {}).update(model=event.model, status="failed", stage=event.stage)

    async def register_version(self, event: ModelTrained, *, event_id: str) -> tuple[domain.ModelVersion, bool]:
        """Give a trained model the next version number; returns (version, created)."""
        for known in self.versions.values():
            if known.run_id == event.run_id:
                return known, False
        number = self.numbers.get(event.model, 0) + 1
        self.numbers[event.model] = number
        created = domain.ModelVersion(
            model=event.model,
            version=number,
            status="registered",
            status_reason="trained and registered",
            run_id=event.run_id,
            task=event.task,
            estimator=event.estimator,
            params=dict(event.params),
            metrics=dict(event.metrics),
            artifacts=[a.model_dump(mode="json") for a in event.artifacts],
            manifest={"data_sha256": event.data_sha256, "target": event.target},
            dataset=event.dataset,
            dataset_version=event.dataset_version,
            code_version=event.code_version,
            spec_revision=event.spec_revision,
            aliases=[],
            tags={},
            correlation_id=event.correlation_id,
            created_at=event.occurred_at,
            updated_at=event.occurred_at,
        )
        self.versions[(event.model, number)] = created
        self.runs.setdefault(event.run_id, {}).update(model=event.model, status="succeeded")
        return created, True

    async def aliases_of(self, model: str) -> dict[str, int]:
        """Alias to version for one model."""
        return dict(self.aliases.get(model, {}))

    async def get_version(self, model: str, version: int) -> domain.ModelVersion:
        """One version with its aliases; raises NotFound."""
        known = self.versions.get((model, version))
        if known is None:
            raise domain.NotFound(f"{model}@{version} does not exist")
        names = sorted(a for a, v in self.aliases.get(model, {}).items() if v == version)
        return known.model_copy(update={"aliases": names})

    async def set_status(self, model: str, version: int, status: str, reason: str) -> None:
        """Write a version's status and why. Raises NotFound."""
        known = await self.get_version(model, version)
        self.versions[(model, version)] = known.model_copy(
            update={"status": status, "status_reason": reason, "aliases": []}
        )

    async def park(self, model: str, version: int, status: str, reason: str) -> None:
        """Keep a status that arrived before the version's evaluation, to apply after it."""
        await self.get_version(model, version)
        self.parked[(model, version)] = (status, reason)

    async def take_parked(self, model: str, version: int) -> tuple[str, str] | None:
        """The parked (status, reason) of a version, removed; None if there is none."""
        await self.get_version(model, version)
        return self.parked.pop((model, version), None)

    async def keep_evaluation(self, event: ModelEvaluated, *, event_id: str) -> None:
        """Keep an evaluation of a version."""
        self.evaluations.setdefault(event_id, event)

    async def keep_rollout(self, event: RolloutChanged, *, event_id: str) -> None:
        """Keep a rollout transition."""
        self.rollouts.setdefault(event_id, event)

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
        item = domain.HistoryItem(
            event_id=event_id, kind=kind, version=version, summary=summary, payload=payload, occurred_at=occurred_at
        )
        self.history.setdefault(event_id, (model, item))

    def history_of(self, model: str) -> list[domain.HistoryItem]:
        """A model's history items, in the order they were kept."""
        return [item for owner, item in self.history.values() if owner == model]

    # ------------------------------------------------------------ what operators' commands need

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
        entry = domain.AuditEntry(
            id=len(self.audits) + 1,
            at=datetime.now(UTC),
            actor=actor,
            subject=subject,
            role=role,
            action=action,
            target=target,
            reason=reason,
            outcome=outcome,
            detail=detail or {},
        )
        self.audits.append(entry)
        return entry.id

    async def audit_log(
        self, *, target: str | None = None, actor: str | None = None, action: str | None = None, limit: int = 100
    ) -> list[domain.AuditEntry]:
        """Who did what, newest first; `target` a model matches its versions too."""
        found = [
            e
            for e in reversed(self.audits)
            if (target is None or e.target == target or e.target.startswith(f"{target}@"))
            and (actor is None or e.actor == actor)
            and (action is None or e.action == action)
        ]
        return found[:limit]

    async def status_of(self, model: str, version: int, *, lock: bool = False) -> str:
        """A version's status; raises NotFound."""
        return (await self.get_version(model, version)).status

    async def get_model(self, name: str) -> domain.ModelSummary:
        """One model's summary; raises NotFound."""
        if name not in self.numbers and name not in self.specs:
            raise domain.NotFound(f"model {name!r} does not exist")
        statuses: dict[str, int] = {}
        for (model, _), known in self.versions.items():
            if model == name:
                statuses[known.status] = statuses.get(known.status, 0) + 1
        spec = self.specs[name][-1] if name in self.specs else None
        return domain.ModelSummary(
            name=name,
            workspace=spec.spec.get("workspace", "default") if spec else "default",
            latest_version=self.numbers.get(name, 0),
            aliases=dict(self.aliases.get(name, {})),
            spec_revision=spec.revision if spec else None,
            dataset=spec.spec.get("dataset") if spec else None,
            task=spec.spec.get("task") if spec else None,
            statuses=statuses,
            updated_at=datetime.now(UTC),
        )

    async def latest_spec(self, model: str) -> domain.SpecRevision:
        """The spec revision in force; raises NotFound."""
        if model not in self.specs:
            raise domain.NotFound(f"no spec applied for model {model!r}")
        return self.specs[model][-1]

    async def get_dataset(self, name: str, version: str) -> domain.DatasetVersion:
        """One dataset version; raises NotFound."""
        found = self.datasets.get((name, version))
        if found is None:
            raise domain.NotFound(f"dataset {name}@{version} does not exist")
        return domain.DatasetVersion(
            name=name,
            version=version,
            uri=found.uri,
            sha256=found.sha256,
            format=found.format,
            row_count=found.row_count,
            size_bytes=found.size_bytes,
            columns=found.columns,
            profile=None,
            producer=found.producer,
            lineage=found.lineage.model_dump(mode="json") if found.lineage else None,
            arrived_at=found.occurred_at,
        )

    async def set_alias(self, model: str, alias: str, version: int, *, by: str) -> None:
        """Point `alias` at a version (creating or moving it)."""
        self.aliases.setdefault(model, {})[alias] = version

    async def drop_alias(self, model: str, alias: str) -> bool:
        """Remove an alias; False if there was none."""
        return self.aliases.get(model, {}).pop(alias, None) is not None

    async def set_tag(self, model: str, version: int, key: str, value: str) -> None:
        """Set a tag on a version."""
        known = await self.get_version(model, version)
        self.versions[(model, version)] = known.model_copy(update={"tags": {**known.tags, key: value}, "aliases": []})

    async def drop_tag(self, model: str, version: int, key: str) -> bool:
        """Remove a tag; False if there was none."""
        known = self.versions.get((model, version))
        if known is None or key not in known.tags:
            return False
        tags = {k: v for k, v in known.tags.items() if k != key}
        self.versions[(model, version)] = known.model_copy(update={"tags": tags})
        return True

    async def workspace_of(self, model: str) -> str | None:
        """The workspace that owns a model (None: no such model)."""
        if model in self.specs:
            return str(self.specs[model][-1].spec.get("workspace", "default"))
        return "default" if model in self.numbers else None

    async def workspaces_of_dataset(self, dataset: str) -> set[str]:
        """The workspaces of the models whose spec in force trains on a dataset."""
        return {
            str(revisions[-1].spec.get("workspace", "default"))
            for revisions in self.specs.values()
            if revisions and revisions[-1].spec.get("dataset") == dataset
        }

    async def apply_spec(self, spec: ModelSpec, spec_yaml: str, *, applied_by: str) -> tuple[domain.SpecRevision, bool]:
        """Store a new spec revision; returns (revision, changed). An identical spec is not a new revision."""
        revisions = self.specs.setdefault(spec.model, [])
        digest = spec.sha256()
        if revisions and revisions[-1].sha256 == digest:
            return revisions[-1], False
        revision = domain.SpecRevision(
            model=spec.model,
            revision=len(revisions) + 1,
            sha256=digest,
            spec=spec.model_dump(mode="json"),
            spec_yaml=spec_yaml,
            applied_by=applied_by,
            applied_at=datetime.now(UTC),
        )
        revisions.append(revision)
        return revision, True
