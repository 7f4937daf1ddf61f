"""The registry's rules: version statuses, what rollouts do to aliases, references and filters.

Pure: values in, values out. The objects here are also what the HTTP API returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from shared.contract import views
from shared.contract.events import (
    AlertRaised,
    AlertResolved,
    ArtifactRef,
    DataArrived,
    DriftDetected,
    Event,
    ModelEvaluated,
    ModelRegistered,
    PerformanceDegraded,
    RetrainRequested,
    RetrainSkipped,
    RolloutChanged,
    RolloutCommanded,
    TrainingFailed,
)
from shared.contract.refs import ALIAS

Status = Literal["registered", "evaluating", "approved", "held-for-review", "rejected", "serving", "retired"]
RESERVED_ALIASES = frozenset({"champion", "challenger", "latest"})

# Which status may follow which. Events arrive from several topics and may be redelivered;
# a change not listed here is recorded in the history but leaves the status alone.
TRANSITIONS: dict[str, frozenset[str]] = {
    "registered": frozenset({"evaluating", "approved", "held-for-review", "rejected"}),
    "evaluating": frozenset({"approved", "held-for-review", "rejected"}),
    "held-for-review": frozenset({"approved", "rejected"}),
    "approved": frozenset({"serving", "rejected", "retired"}),
    "serving": frozenset({"retired", "rejected"}),
    "retired": frozenset({"serving"}),
    "rejected": frozenset(),
}


class RegistryRefusal(ValueError):
    """An event or request the registry will not apply; the message says why."""


class Forbidden(RegistryRefusal):
    """A request the caller's role in the model's workspace does not allow (answered 403)."""


class NotFound(LookupError):
    """A model, version, alias, dataset or spec that does not exist."""


def can_move(current: str, target: str) -> bool:
    """Whether a version in `current` may move to `target`."""
    return target == current or target in TRANSITIONS.get(current, frozenset())


def awaits_evaluation(status: str) -> bool:
    """Whether a version's evaluation has not been recorded yet. ModelEvaluated and RolloutChanged
    travel on different topics: a rollout's status for such a version is parked on it and applied
    once the evaluation is recorded."""
    return status in ("registered", "evaluating")


def check_approval(model: str, version: int, status: str) -> None:
    """Only a version held for review is approved by hand."""
    if status != "held-for-review":
        raise RegistryRefusal(f"{model}@{version} is {status}; only a version held for review is approved by hand")


def check_rejection(model: str, version: int, status: str) -> None:
    """A version serving, retired or rejected already is not rejected by hand."""
    if status in ("serving", "retired", "rejected"):
        hint = "; roll it back instead" if status == "serving" else ""
        raise RegistryRefusal(f"{model}@{version} is {status}{hint}")


def check_rollout_start(model: str, version: int, status: str) -> None:
    """Only approved or retired versions are rolled out."""
    if status not in ("approved", "retired"):
        raise RegistryRefusal(f"{model}@{version} is {status}; only approved or retired versions are rolled out")


# ---------------------------------------------------------------- what rollouts change


@dataclass(frozen=True)
class RolloutEffects:
    """What one RolloutChanged does to a model's aliases and version statuses."""

    set_aliases: dict[str, int] = field(default_factory=dict)
    drop_aliases: frozenset[str] = frozenset()
    statuses: dict[int, tuple[str, str]] = field(default_factory=dict)


def rollout_effects(event: RolloutChanged, aliases: dict[str, int]) -> RolloutEffects:
    """Aliases and statuses after a rollout transition.

    `champion` moves to the candidate on promotion and back to the stable version on rollback;
    `challenger` names the candidate while it takes live traffic.
    """
    candidate, stable = event.candidate_version, event.stable_version
    challenger_is_candidate = aliases.get("challenger") == candidate
    drop = frozenset({"challenger"}) if challenger_is_candidate else frozenset()
    if event.to_state in ("canary", "shadow"):
        return RolloutEffects(set_aliases={"challenger": candidate})
    if event.to_state == "promoted":
        statuses = {candidate: ("serving", f"promoted: {event.reason}")}
        if stable is not None and stable != candidate:
            statuses[stable] = ("retired", f"replaced by version {candidate}")
        return RolloutEffects(set_aliases={"champion": candidate}, drop_aliases=drop, statuses=statuses)
    if event.to_state == "rolled-back":
        statuses = {candidate: ("rejected", f"rolled back: {event.reason}")}
        set_aliases: dict[str, int] = {}
        if stable is not None:
            statuses[stable] = ("serving", f"restored after rolling back version {candidate}")
            set_aliases["champion"] = stable
        drop_champion = frozenset({"champion"}) if stable is None and aliases.get("champion") == candidate else drop
        return RolloutEffects(set_aliases=set_aliases, drop_aliases=drop | drop_champion, statuses=statuses)
    if event.to_state == "superseded":
        return RolloutEffects(drop_aliases=drop, statuses={candidate: ("retired", f"superseded: {event.reason}")})
    return RolloutEffects()


def registered(version: ModelVersion, *, champion: int | None) -> ModelRegistered:
    """The event that hands a new version to the evaluator."""
    return ModelRegistered(
        model=version.model,
        version=version.version,
        run_id=version.run_id,
        dataset_version=version.dataset_version,
        task=version.task,
        artifacts=[ArtifactRef.model_validate(a) for a in version.artifacts],
        metrics=version.metrics,
        champion_version=champion,
    )


def history_entry(event: Event) -> tuple[int | None, str] | None:
    """(version, one-line summary) of a lifecycle event the registry keeps; None if it keeps nothing."""
    match event:
        case DriftDetected():
            drifted = [f.feature for f in event.features if f.drifted]
            return event.version, (
                f"drift in {len(drifted)}/{len(event.features)} features over {event.rows} rows"
                + (f": {', '.join(drifted[:8])}" if drifted else "")
                + (" (dataset drift)" if event.dataset_drift else "")
            )
        case PerformanceDegraded():
            return event.version, (
                f"{event.metric} {event.value:.4g} against {event.baseline:.4g} at evaluation "
                f"(threshold {event.threshold:.4g}, {event.labelled_rows} labels)"
            )
        case AlertRaised() if event.model != "-":
            version = event.labels.get("version")
            summary = event.annotations.get("summary", event.labels.get("kind", "alert"))
            return (int(version) if version and version.isdigit() else None), f"alert raised: {summary}"
        case AlertResolved() if event.model != "-":
            version = event.labels.get("version")
            return (int(version) if version and version.isdigit() else None), f"alert resolved: {event.reason}"
        case RetrainRequested():
            return None, f"retrain requested by {event.requested_by} ({event.reason})"
        case RetrainSkipped():
            return event.version, f"retrain on {event.asked_for} skipped: {event.reason}"
        case RolloutCommanded():
            return event.version, f"{event.actor} commanded {event.command}" + (
                f": {event.reason}" if event.reason else ""
            )
    return None


def check_same_dataset(event: DataArrived, sha256: str | None, uri: str) -> None:
    """A dataset version label names one content: the same version again with another digest or
    URI is refused."""
    if sha256 != event.sha256 or uri != event.uri:
        raise RegistryRefusal(
            f"dataset {event.dataset}@{event.version} is already recorded with sha256 "
            f"{sha256} at {uri}; this event says sha256 {event.sha256} at {event.uri}. "
            "A version label names one content: publish a new version instead"
        )


def failure_summary(event: TrainingFailed) -> str:
    """The line a failed training run leaves in its model's history."""
    return f"training {event.run_id} failed at {event.stage}: {event.reason}"


def evaluation_reason(event: ModelEvaluated) -> str:
    """Why a version has the status its evaluation gave it."""
    failed = [g.name for g in event.gates if not g.passed]
    return f"evaluation: {event.decision}" + (f" (failed gates: {', '.join(failed)})" if failed else "")


def status_after_evaluation(decision: str) -> str:
    """Version status for an evaluator decision."""
    return {"approved": "approved", "held-for-review": "held-for-review", "rejected": "rejected"}[decision]


# ---------------------------------------------------------------- references and filters


_METRIC_FILTER = re.compile(r"^([a-z_0-9]+)\s*(>=|<=|>|<|=)\s*(-?[0-9.]+(?:e-?[0-9]+)?)$")


@dataclass(frozen=True)
class MetricFilter:
    """metric OP value, e.g. accuracy>=0.8."""

    metric: str
    op: str
    value: float


def parse_metric_filter(text: str) -> MetricFilter:
    """Parse `metric>=0.8` style filters; raises ValueError naming the problem."""
    match = _METRIC_FILTER.match(text.strip())
    if not match:
        raise ValueError(f"{text!r}: a metric filter looks like accuracy>=0.8 (operators >= <= > < =)")
    return MetricFilter(match.group(1), match.group(2), float(match.group(3)))


def check_alias(alias: str) -> None:
    """Refuse an alias name operators may not set by hand."""
    if not ALIAS.match(alias):
        raise RegistryRefusal(f"alias {alias!r}: lowercase letters, digits, '_' and '-', starting with a letter")
    if alias in RESERVED_ALIASES:
        raise RegistryRefusal(f"{alias!r} is kept by the registry (champion and challenger move with rollouts)")


# ---------------------------------------------------------------- what the registry returns
# The contract's views (shared.contract.views), which the client and the console read too: one set
# of response types.

AuditEntry = views.AuditEntry
DatasetVersion = views.DatasetVersion
Evaluation = views.Evaluation
HistoryItem = views.HistoryItem
Lineage = views.Lineage
ModelSummary = views.ModelSummary
ModelVersion = views.ModelVersion
RolloutStep = views.RolloutStep
SpecRevision = views.SpecRevision
TrainingRun = views.TrainingRun
