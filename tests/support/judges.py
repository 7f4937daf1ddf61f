"""A stand-in for the evaluator's judge, for handler tests: no model is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.evaluator import domain
from shared.contract.events import ArtifactRef, GateResult, ModelRegistered
from shared.contract.spec import ModelSpec


def gate(passed: bool) -> GateResult:
    return GateResult(name="min_accuracy", metric="accuracy", value=0.8, threshold=0.7, comparator=">=", passed=passed)


@dataclass
class FakeJudge:
    """Gives the verdicts it is told to and remembers what it was asked."""

    passes: bool = True
    fails_with: Exception | None = None
    asked: list[tuple[int, list[ArtifactRef] | None]] = field(default_factory=list)

    async def verdict(
        self, spec: ModelSpec, event: ModelRegistered, champion: list[ArtifactRef] | None
    ) -> domain.Verdict:
        self.asked.append((event.version, champion))
        if self.fails_with is not None:
            raise self.fails_with
        decision = "approved" if self.passes else "rejected"
        return domain.Verdict([gate(self.passes)], {"accuracy": 0.8}, {}, decision, 1000)
