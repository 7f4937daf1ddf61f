"""The evaluator's store in dictionaries: the twin of `SqlStore` (services/evaluator/store.py) for the
handler tests; the store contract (tests/contracts/evaluator_store.py) runs on both."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.contract.events import ArtifactRef, ModelEvaluated, ModelRegistered
from shared.runtime.memory import MemorySpecs


@dataclass
class MemoryStore(MemorySpecs):
    """The evaluator's tables in dictionaries: the twin of `SqlStore` for handler tests."""

    versions: dict[tuple[str, int], list[ArtifactRef]] = field(default_factory=dict)
    parked: dict[tuple[str, int], ModelRegistered] = field(default_factory=dict)
    results: dict[tuple[str, int], ModelEvaluated] = field(default_factory=dict)

    async def keep_version(self, event: ModelRegistered) -> None:
        """Remember a version's artifacts."""
        self.versions.setdefault((event.model, event.version), list(event.artifacts))

    async def artifacts_of(self, model: str, version: int) -> list[ArtifactRef] | None:
        """A known version's artifacts."""
        return self.versions.get((model, version))

    async def park(self, event: ModelRegistered) -> None:
        """Hold a registration until its model's spec is known."""
        self.parked.setdefault((event.model, event.version), event)

    async def unpark(self, model: str) -> list[ModelRegistered]:
        """Take a model's parked registrations, oldest version first."""
        taken = sorted((key for key in self.parked if key[0] == model), key=lambda key: key[1])
        return [self.parked.pop(key) for key in taken]

    async def keep_result(self, event: ModelEvaluated, *, seconds: float) -> None:
        """Record an evaluation (the first one of a version stands)."""
        self.results.setdefault((event.model, event.version), event)

    async def result_of(self, model: str, version: int) -> str | None:
        """The decision already taken for a version, if any."""
        found = self.results.get((model, version))
        return found.decision if found is not None else None
