"""The deployer's store in dictionaries: the twin of `SqlStore` (services/deployer/store.py) for the
handler tests; the store contract (tests/contracts/deployer_store.py) runs on both."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from services.deployer import domain
from services.deployer.store import Command, LiveModel
from shared.contract.events import ModelRegistered
from shared.runtime.memory import MemorySpecs


@dataclass
class MemoryStore(MemorySpecs):
    """The deployer's tables in dictionaries: the twin of `SqlStore` for handler tests."""

    versions: dict[tuple[str, int], domain.KnownVersion] = field(default_factory=dict)
    models: dict[str, domain.ModelState] = field(default_factory=dict)
    rollouts: dict[str, domain.Rollout] = field(default_factory=dict)
    traceparents: dict[str, str | None] = field(default_factory=dict)
    commands: dict[str, Command] = field(default_factory=dict)
    # The registry's audit log, which the SQL store reads from the registry's table.
    audit: dict[int, domain.AuditEntry] = field(default_factory=dict)

    async def keep_version(self, event: ModelRegistered) -> None:
        """Remember a version's artifacts."""
        known = self.versions.get((event.model, event.version), domain.KnownVersion((), None, False))
        self.versions[(event.model, event.version)] = replace(known, artifacts=tuple(event.artifacts))

    async def version_of(self, model: str, version: int) -> domain.KnownVersion | None:
        """A version, if the deployer has seen it."""
        return self.versions.get((model, version))

    async def decide(self, model: str, version: int, decision: str, *, approved: bool) -> None:
        """Record the evaluator's decision (or an operator's approval) on a version."""
        known = self.versions.get((model, version), domain.KnownVersion((), None, False))
        self.versions[(model, version)] = replace(known, decision=decision, approved=approved)

    async def newest_approved(self, model: str) -> int | None:
        """The newest approved version of a model."""
        return max((v for (m, v), known in self.versions.items() if m == model and known.approved), default=None)

    async def lock(self, model: str) -> domain.ModelState:
        """The model's state, created if new."""
        return self.models.setdefault(model, domain.ModelState(model))

    async def current(self, state: domain.ModelState) -> domain.Rollout | None:
        """The model's current (or last) rollout."""
        return self.rollouts.get(state.rollout_id) if state.rollout_id is not None else None

    async def save(self, state: domain.ModelState, rollout: domain.Rollout, *, traceparent: str | None = None) -> None:
        """Persist a rollout's state and the model's state that follows from it."""
        if rollout.rollout_id not in self.rollouts:
            self.traceparents[rollout.rollout_id] = traceparent
        self.rollouts[rollout.rollout_id] = rollout
        self.models[state.model] = state

    async def traceparent_of(self, rollout_id: str) -> str | None:
        """The trace a rollout belongs to."""
        return self.traceparents.get(rollout_id)

    async def knows_rollout(self, model: str, rollout_id: str) -> bool:
        """Whether the deployer started this rollout of the model."""
        found = self.rollouts.get(rollout_id)
        return found is not None and found.model == model

    async def log_command(self, command: Command) -> None:
        """Record a command and what came of it (once per event)."""
        self.commands.setdefault(command.event_id, command)

    async def audit_entry(self, audit_id: int) -> domain.AuditEntry | None:
        """The registry's audit entry of that id, if there is one."""
        return self.audit.get(audit_id)

    async def live_models(self, only: frozenset[str] | None = None) -> list[LiveModel]:
        """Every model with a rollout (or the named ones), with the artifacts of the versions it routes to."""
        found = []
        for name, state in sorted(self.models.items()):
            rollout = await self.current(state)
            if rollout is None or (only and name not in only):
                continue
            wanted = {v for v in (rollout.candidate, rollout.stable) if v is not None}
            artifacts = {v: list(k.artifacts) for (m, v), k in self.versions.items() if m == name and v in wanted}
            found.append(LiveModel(name, rollout, artifacts, await self.spec_of(name)))
        return found
