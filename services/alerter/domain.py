"""The alerter's pure core: which events raise or resolve which alerts, silences, inhibition,
and what a group's notification says. No I/O.

An alert's identity is the fingerprint of its label set (model, version, kind, severity, team and
the spec's extra labels): the same condition raised again updates the alert, it is not a new one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from services.alerter.config import InhibitRule, Matcher, matches_all
from shared.contract.events import (
    CanaryAnalyzed,
    DeadLettered,
    DriftDetected,
    Event,
    ModelEvaluated,
    ModelTrained,
    PerformanceDegraded,
    RetrainSkipped,
    RolloutChanged,
    Severity,
    TrainingFailed,
)
from shared.contract.spec import Alerts

Status = Literal["firing", "resolved"]
PLATFORM = "-"  # the model label of alerts about the platform itself (dead letters)
SUMMARY_LIMIT = 8  # features, gates or comparisons named in a summary
# Kinds that stay open until an event clears them, whatever resolve_timeout says: a skipped retrain
# is announced once per cooldown, and nothing changes until new data (or a new version) comes.
UNTIL_CLEARED = frozenset({"retrain-skipped"})


def fingerprint(labels: dict[str, str]) -> str:
    """The identity of a label set: the same labels, whatever their order, give the same fingerprint."""
    canonical = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """An alert as an event raised it."""

    model: str
    labels: dict[str, str]
    annotations: dict[str, str]
    severity: Severity
    source_event_type: str
    source_event_id: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)


@dataclass(frozen=True)
class Resolution:
    """Alerts an event clears: of `model`, of these kinds, of versions below `below_version` if set."""

    model: str
    kinds: frozenset[str]
    reason: str
    below_version: int | None = None
    at: datetime | None = None  # when the resolving event happened

    def clears(self, labels: dict[str, str]) -> bool:
        """Whether an alert with these labels is cleared."""
        if labels.get("model") != self.model or labels.get("kind") not in self.kinds:
            return False
        if self.below_version is None:
            return True
        version = labels.get("version", "")
        return version.isdigit() and int(version) < self.below_version


@dataclass(frozen=True)
class Links:
    """Where an alert's annotations point: the registry API (lineage) and the console's pages
    (the model or version, and the lifecycle's trace)."""

    api_url: str
    console_url: str | None = None

    def annotations(self, model: str, version: int | None, traceparent: str | None) -> dict[str, str]:
        found: dict[str, str] = {}
        if model != PLATFORM:
            found["lineage"] = (
                f"{self.api_url}/v1/models/{model}/versions/{version}/lineage"
                if version is not None
                else f"{self.api_url}/v1/models/{model}/history"
            )
            if self.console_url:
                page = f"/models/{model}/versions/{version}" if version is not None else f"/models/{model}"
                found["console"] = f"{self.console_url}{page}"
        trace_id = traceparent.split("-")[1] if traceparent and traceparent.count("-") >= 3 else None
        if trace_id:
            found["trace_id"] = trace_id
            if self.console_url:
                found["trace"] = f"{self.console_url}/traces/{trace_id}"
        return found


# Alertmanager's `alertname` per kind: what on-call tools group, route and show by.
ALERTNAMES = {
    "drift": "ModelDriftDetected",
    "performance": "ModelPerformanceDegraded",
    "retrain-skipped": "RetrainSkipped",
    "training-failed": "TrainingFailed",
    "evaluation-rejected": "ModelEvaluationRejected",
    "rollback": "CanaryRolledBack",
    "canary-failed": "CanaryFailed",
    "dead-letter": "EventDeadLettered",
}


def _labels(
    model: str, version: int | None, kind: str, severity: str, alerts: Alerts | None, workspace: str
) -> dict[str, str]:
    labels = {**(alerts.labels if alerts else {})}
    labels.update(
        alertname=ALERTNAMES[kind],
        model=model,
        kind=kind,
        severity=severity,
        team=alerts.team if alerts else "ml",
        workspace=workspace,
    )
    if version is not None:
        labels["version"] = str(version)
    return labels


def _names(items: Iterable[str]) -> str:
    listed = list(items)
    shown = ", ".join(listed[:SUMMARY_LIMIT])
    return shown + (f" and {len(listed) - SUMMARY_LIMIT} more" if len(listed) > SUMMARY_LIMIT else "")


def raised_by(
    event: Event,
    event_id: str,
    traceparent: str | None,
    alerts: Alerts | None,
    links: Links,
    workspace: str = "default",
) -> Alert | None:
    """The alert an event raises, if any. `alerts` is the model's spec's alert labels (if known),
    `workspace` the model's (a label of every model's alert, for routing and for who may see it;
    the platform's own alerts have none)."""
    default: Severity = alerts.severity if alerts else "warning"
    model = getattr(event, "model", PLATFORM)
    version: int | None = None
    evidence: dict[str, Any]
    if isinstance(event, DriftDetected):
        kind, severity, version = "drift", event.severity, event.version
        drifted = [f.feature for f in event.features if f.drifted]
        if event.prediction and event.prediction.drifted:
            drifted.append("the prediction")
        summary = f"{model} v{version}: drift in {_names(drifted) or 'no single feature'} ({event.rows} rows)"
        evidence = {
            "window_id": event.window_id,
            "drifted_share": event.drifted_share,
            "dataset_drift": event.dataset_drift,
            "features": [f.model_dump() for f in event.features if f.drifted],
        }
    elif isinstance(event, PerformanceDegraded):
        kind, severity, version = "performance", event.severity, event.version
        basis = f"estimated over {event.rows} unlabelled rows" if event.estimated else f"{event.labelled_rows} labels"
        summary = (
            f"{model} v{version}: {'estimated' if event.estimated else 'live'} {event.metric} {event.value:.4f} "
            f"against {event.baseline:.4f} at validation (threshold {event.threshold:.4f}, {basis})"
        )
        evidence = event.model_dump(
            include={"metric", "value", "baseline", "threshold", "labelled_rows", "window_id", "estimated", "rows"}
        )
    elif isinstance(event, RetrainSkipped):
        # One alert per version while the condition lasts: the same labels whatever the reason's text.
        kind, severity, version = "retrain-skipped", "warning", event.version
        summary = f"{model} v{version}: retrain on {event.asked_for} skipped: {event.reason}"
        evidence = event.model_dump(
            include={
                "asked_for",
                "dataset",
                "trained_on",
                "latest_dataset_version",
                "spec_revision",
                "feedback_rows",
                "feedback_needed",
                "cause_event_id",
            }
        )
    elif isinstance(event, TrainingFailed):
        kind, severity = "training-failed", default
        summary = f"{model}: training run {event.run_id} failed at {event.stage}: {event.reason}"
        evidence = event.model_dump(include={"run_id", "stage", "reason", "violations", "dataset_version", "attempts"})
    elif isinstance(event, ModelEvaluated):
        if event.decision != "rejected":
            return None
        kind, severity, version = "evaluation-rejected", default, event.version
        failed = [g.name for g in event.gates if not g.passed]
        summary = f"{model} v{version}: rejected by the evaluation (failed {_names(failed) or 'no gate'})"
        evidence = {
            "champion_version": event.champion_version,
            "failed_gates": [g.model_dump() for g in event.gates if not g.passed],
        }
    elif isinstance(event, RolloutChanged):
        if event.to_state != "rolled-back":
            return None
        kind, severity, version = "rollback", "critical", event.candidate_version
        summary = f"{model} v{version}: rollout rolled back ({event.reason}); v{event.stable_version} keeps serving"
        evidence = {"rollout_id": event.rollout_id, "reason": event.reason, **event.evidence}
    elif isinstance(event, CanaryAnalyzed):
        if event.verdict != "rollback":
            return None
        kind, severity, version = "canary-failed", default, event.candidate_version
        failed = [c.metric for c in event.comparisons if not c.passed]
        summary = f"{model} v{version}: canary worse than v{event.stable_version} on {_names(failed) or event.reason}"
        evidence = {"reason": event.reason, "comparisons": [c.model_dump() for c in event.comparisons]}
    elif isinstance(event, DeadLettered):
        model, kind, severity = PLATFORM, "dead-letter", "warning"
        labels = {
            "alertname": ALERTNAMES[kind],
            "model": PLATFORM,
            "kind": kind,
            "severity": severity,
            "team": "platform",
            "consumer": event.consumer,
            "topic": event.original_topic,
            "error_type": event.error_type,
        }
        summary = f"{event.consumer} dead-lettered a message of {event.original_topic}: {event.reason}"
        evidence = event.model_dump(include={"reason", "original_partition", "original_offset", "original_event_id"})
        annotations = {"summary": summary[:1000], "evidence": json.dumps(evidence, default=str)}
        annotations.update(links.annotations(model, None, traceparent))
        return Alert(model, labels, annotations, severity, event.event_type, event_id)
    else:
        return None
    labels = _labels(model, version, kind, severity, alerts, workspace)
    annotations = {"summary": summary[:1000], "evidence": json.dumps(evidence, default=str)[:20_000]}
    annotations.update(links.annotations(model, version, traceparent))
    return Alert(model, labels, annotations, severity, event.event_type, event_id)


def resolved_by(event: Event) -> Resolution | None:
    """The alerts an event clears, if any."""
    if isinstance(event, RolloutChanged) and event.to_state == "promoted" and event.candidate_version is not None:
        version = event.candidate_version
        return Resolution(
            event.model,
            frozenset({"drift", "performance", "rollback", "canary-failed", "evaluation-rejected", "retrain-skipped"}),
            f"version {version} was promoted",
            below_version=version,
            at=event.occurred_at,
        )
    if isinstance(event, ModelTrained):
        return Resolution(
            event.model,
            frozenset({"training-failed", "retrain-skipped"}),
            f"training run {event.run_id} succeeded on {event.dataset} {event.dataset_version}",
            at=event.occurred_at,
        )
    if isinstance(event, ModelEvaluated) and event.decision != "rejected":
        return Resolution(
            event.model,
            frozenset({"evaluation-rejected"}),
            f"version {event.version} passed the evaluation",
            below_version=event.version,
            at=event.occurred_at,
        )
    return None


@dataclass(frozen=True)
class Kept:
    """The latest resolution of a model's alerts of one kind, kept: an event that happened before
    it, and reaches the alerter after it (they travel on different topics), raises nothing."""

    reason: str
    at: datetime
    below_version: int | None

    def covers(self, labels: dict[str, str], happened: datetime) -> bool:
        """Whether an alert with these labels, raised by an event that happened then, is already
        resolved."""
        if happened >= self.at:
            return False
        if self.below_version is None:
            return True
        version = labels.get("version", "")
        return version.isdigit() and int(version) < self.below_version


# ---------------------------------------------------------------- silences and inhibition


@dataclass(frozen=True)
class Silence:
    """Mutes alerts whose labels match every matcher, from starts_at until ends_at."""

    id: str
    matchers: list[Matcher]
    starts_at: datetime
    ends_at: datetime

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, labels: dict[str, str], now: datetime) -> bool:
        return self.active(now) and matches_all(self.matchers, labels)


def inhibited(
    targets: dict[str, dict[str, str]], firing: dict[str, dict[str, str]], rules: list[InhibitRule]
) -> dict[str, str]:
    """Which targets (fingerprint -> labels) a firing alert inhibits: fingerprint -> the source's."""
    muted: dict[str, str] = {}
    for rule in rules:
        sources = [(fp, labels) for fp, labels in firing.items() if matches_all(rule.source_matchers, labels)]
        if not sources:
            continue
        for fp, labels in targets.items():
            if fp in muted or not matches_all(rule.target_matchers, labels):
                continue
            for source_fp, source in sources:
                if source_fp != fp and all(source.get(name, "") == labels.get(name, "") for name in rule.equal):
                    muted[fp] = source_fp
                    break
    return muted


# ---------------------------------------------------------------- groups and notifications


def group_labels(labels: dict[str, str], group_by: tuple[str, ...]) -> dict[str, str]:
    """The labels that name an alert's group under a route (`...` groups by every label)."""
    if "..." in group_by:
        return dict(labels)
    return {name: labels.get(name, "") for name in group_by}


def group_key(platform: str, route: str, labels: dict[str, str]) -> str:
    """A group's identity: its platform, route and group labels."""
    return f"{route}:{fingerprint({**labels, '': platform})}"


@dataclass(frozen=True)
class Member:
    """An alert of a group, as the dispatcher sees it at a flush."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    status: Status
    starts_at: datetime
    ends_at: datetime | None
    count: int = 1
    severity: Severity = "warning"
    source_event_type: str = ""
    source_event_id: str = ""
    resolved_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "severity": self.severity,
            "labels": self.labels,
            "annotations": self.annotations,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat() if self.ends_at else None,
            "resolved_reason": self.resolved_reason,
            "times_raised": self.count,
            "source_event_type": self.source_event_type,
            "source_event_id": self.source_event_id,
        }


@dataclass(frozen=True)
class Flush:
    """What a group's flush sends, and what it remembers as notified."""

    send: list[Member]
    notified: dict[str, Status] = field(default_factory=dict)


def flush(members: list[Member], notified: dict[str, str], muted: set[str]) -> Flush:
    """A group's notification: its firing alerts that are not muted (silenced or inhibited), and
    the ones that resolved since they were last notified as firing. Nothing to send: empty."""
    firing = [m for m in members if m.status == "firing" and m.fingerprint not in muted]
    resolved = [m for m in members if m.status == "resolved" and notified.get(m.fingerprint) == "firing"]
    return Flush(send=firing + resolved, notified={m.fingerprint: "firing" for m in firing})


def is_news(previous: str | None) -> bool:
    """Whether raising an alert is news for its groups: new, or firing again after it resolved.
    A repeat of a firing alert only refreshes it: it does not notify before repeat_interval."""
    return previous is None or previous == "resolved"


def due_after_change(
    now: datetime,
    created_at: datetime,
    last_notified_at: datetime | None,
    next_flush_at: datetime | None,
    group_wait: float,
    group_interval: float,
) -> datetime:
    """When a group whose alerts just changed is due: a group never notified, group_wait after it
    formed; otherwise no sooner than group_interval after its last notification; and never later
    than it was already due."""
    earliest = (
        last_notified_at + timedelta(seconds=group_interval)
        if last_notified_at is not None
        else created_at + timedelta(seconds=group_wait)
    )
    due = max(now, earliest)
    return min(due, next_flush_at) if next_flush_at is not None else due


def due_after_flush(
    now: datetime, flushed: Flush, muted_firing: bool, repeat_interval: float, group_interval: float
) -> datetime | None:
    """When a group just flushed is due again: after repeat_interval while it has notified firing
    alerts; after group_interval if only muted ones fire (a silence may end); else never."""
    if flushed.notified:
        return now + timedelta(seconds=repeat_interval)
    if muted_firing:
        return now + timedelta(seconds=group_interval)
    return None


def payload(
    notification_id: str, receiver: str, group: dict[str, str], members: list[Member], now: datetime
) -> dict[str, Any]:
    """A notification body: Slack-compatible (`text`, `blocks`) with the whole group under `modelbus`."""
    firing = [m for m in members if m.status == "firing"]
    resolved = [m for m in members if m.status == "resolved"]
    status = "firing" if firing else "resolved"
    title = " ".join(f"{k}={v}" for k, v in group.items() if v) or "all alerts"
    head = f"[{status.upper()}:{len(firing)}] {title}" + (f" ({len(resolved)} resolved)" if resolved else "")
    lines = [
        f"• {'🔥' if m.status == 'firing' else '✅'} {m.annotations.get('summary', m.fingerprint)}" for m in members
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}},
    ]
    return {
        "text": head + "\n" + "\n".join(lines),
        "blocks": blocks,
        "modelbus": {
            "notification_id": notification_id,
            "receiver": receiver,
            "status": status,
            "group_labels": group,
            "sent_at": now.isoformat(),
            "alerts": [m.as_dict() for m in members],
        },
    }
