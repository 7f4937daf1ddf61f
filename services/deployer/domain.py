"""The deployer's rules: the rollout state machine and the sticky traffic split.

Pure: a rollout and what happened (an analysis, a command, a newer approved version) in; the
next rollout and the transition to announce out, or a refusal that says why. Nothing is ever
half-applied: a refused command changes nothing.

States: `shadow` (the candidate gets a copy of traffic, its answers are never returned) →
`canary` at each step of the policy (10 → 25 → 50 → 100 % by default) → `promoted`; from any live
state, `rolled-back` puts 100 % back on the stable version in one transition; `paused` holds the
current split until resumed by anyone, or promoted by the operator who paused it. A newer approved
version *supersedes* a running rollout: the running candidate is withdrawn (`superseded`, 100 % on
stable) and the newer one starts from the first step, so one rollout per model is ever live.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from shared.contract.events import ArtifactRef, CanaryAnalyzed, RolloutChanged, RolloutCommanded, TrafficShare
from shared.contract.spec import Rollout as RolloutPolicy

State = Literal["pending", "shadow", "canary", "paused", "promoted", "rolled-back", "superseded"]
LIVE = frozenset({"shadow", "canary", "paused"})
BUCKETS = 10_000


@dataclass(frozen=True)
class Rollout:
    """One model's rollout of a candidate over its stable version."""

    model: str
    rollout_id: str
    candidate: int
    stable: int | None
    state: State
    step: int
    steps: tuple[float, ...]
    shadow: bool
    paused_by: str | None
    paused_from: State | None
    entered_at: datetime
    weight: float | None = None

    @property
    def live(self) -> bool:
        """Whether the rollout still steers traffic."""
        return self.state in LIVE

    @property
    def percent(self) -> float:
        """Share of traffic answered by the candidate."""
        if self.state == "promoted":
            return 100.0
        if self.state == "canary" or (self.state == "paused" and self.paused_from == "canary"):
            return self.weight if self.weight is not None else self.steps[self.step]
        return 0.0


@dataclass(frozen=True)
class Transition:
    """A move to announce as RolloutChanged."""

    rollout: Rollout
    from_state: str
    reason: str
    actor: str = "deployer"
    evidence: Mapping[str, float] | None = None


class Refused(ValueError):
    """A command or event that makes no sense for the rollout; nothing changed."""


@dataclass(frozen=True)
class AuditEntry:
    """The registry's record of an operator's action, which a command must match."""

    actor: str
    action: str
    target: str
    outcome: str


def audited_as(command: RolloutCommanded) -> tuple[str, str]:
    """The action and target under which the registry audits a command."""
    if command.command == "approve":
        return "approve", f"{command.model}@{command.version}"
    return f"rollout-{command.command}", command.model


def unaudited(command: RolloutCommanded, entry: AuditEntry | None) -> str | None:
    """Why a command does not match the registry's audit entry it names (None: it does). Only the
    registry's API issues commands, and it audits each one first: a command without its entry
    was written by someone else."""
    if command.audit_id is None:
        return "the command carries no audit id: operators' commands come from the registry's audited API"
    if entry is None:
        return f"the registry's audit log has no entry {command.audit_id}"
    action, target = audited_as(command)
    if (entry.actor, entry.action, entry.target, entry.outcome) != (command.actor, action, target, "ok"):
        return (
            f"audit entry {command.audit_id} records {entry.actor} {entry.action} {entry.target} ({entry.outcome}),"
            f" not {command.actor} {action} {target}"
        )
    return None


class DeployerRefusal(ValueError):
    """A command the deployer will not carry out; dead-lettered with the reason."""


@dataclass(frozen=True)
class KnownVersion:
    """A version as the deployer knows it: its artifacts and whether it may be rolled out."""

    artifacts: tuple[ArtifactRef, ...]
    decision: str | None
    approved: bool


@dataclass(frozen=True)
class ModelState:
    """Per model: the champion and the current (or last) rollout."""

    model: str
    champion: int | None = None
    rollout_id: str | None = None


def after_save(state: ModelState, rollout: Rollout) -> ModelState:
    """The model once `rollout` is its newest state: its current rollout and champion follow it."""
    rollout_id = state.rollout_id if rollout.state == "superseded" else rollout.rollout_id
    champion = state.champion
    if rollout.state == "promoted":
        champion = rollout.candidate
    elif rollout.state == "rolled-back":
        champion = rollout.stable
    return replace(state, rollout_id=rollout_id, champion=champion)


def admits(state: ModelState, running: Rollout | None, version: int, *, actor: str, allow_older: bool) -> bool:
    """Whether a rollout of `version` starts now.

    The deployer's own approval of a version already rolling out, already serving or older than
    the newest is stale: False, nothing to do. An operator asking for it is refused with the reason,
    unless they start an older version on purpose (`allow_older`: going back).
    """
    by_operator = actor != "deployer"
    live = running if running is not None and running.live else None
    if live is not None and live.candidate == version:
        if not by_operator:
            return False
        raise DeployerRefusal(f"version {version} is already rolling out ({live.state})")
    if version == state.champion and live is None:
        if not by_operator:
            return False
        raise DeployerRefusal(f"version {version} is already serving {state.model}")
    newest = max(v for v in (state.champion, running.candidate if running else None, 0) if v is not None)
    if version < newest and not allow_older:
        if not by_operator:
            return False
        raise DeployerRefusal(f"version {version} is older than version {newest}; start it explicitly to go back")
    return True


def startable(model: str, version: int, known: KnownVersion | None, command: str) -> None:
    """Refuse to approve or start a version the deployer may not roll out, saying why."""
    if known is None or not known.artifacts:
        raise DeployerRefusal(f"{model}@{version} is not a registered version known to the deployer")
    if command == "approve":
        if known.decision != "held-for-review":
            raise DeployerRefusal(
                f"{model}@{version} is {known.decision or 'not evaluated'}; only a version held for review is approved"
            )
    elif not known.approved:
        raise DeployerRefusal(
            f"{model}@{version} was not approved ({known.decision or 'not evaluated'}); it cannot be rolled out"
        )


Verdict = Literal["advance", "hold", "rollback"]


def enough_samples(verdict: Verdict, samples: int, min_samples: int) -> Verdict:
    """The monitor's verdict, held while the canary has fewer than `min_samples` rows."""
    return "hold" if verdict == "advance" and samples < min_samples else verdict


def evidence_of(event: CanaryAnalyzed) -> dict[str, float]:
    """The numbers behind a canary analysis, flattened for RolloutChanged."""
    numbers: dict[str, float] = {
        "candidate_samples": float(event.candidate_samples),
        "stable_samples": float(event.stable_samples),
    }
    for comparison in event.comparisons:
        for side in ("candidate", "stable"):
            value = getattr(comparison, side)
            if value is not None:
                numbers[f"{comparison.metric}_{side}"] = float(value)
        numbers[f"{comparison.metric}_threshold"] = comparison.threshold
    return numbers


def rollout_of(event: RolloutChanged) -> Rollout:
    """The rollout a RolloutChanged announces, as far as routing needs it: its versions, state and
    the candidate's share of traffic (serving applies it without reading the deployer's tables)."""
    shares = {share.role: share for share in event.traffic}
    paused_from: State | None = None
    if event.to_state == "paused":
        paused_from = "shadow" if "shadow" in shares else "canary"
    canary = shares.get("canary")
    weight = float(canary.percent) if canary is not None else 0.0
    return Rollout(
        model=event.model,
        rollout_id=event.rollout_id,
        candidate=event.candidate_version,
        stable=event.stable_version,
        state=event.to_state,
        step=event.step,
        steps=(weight,),
        shadow="shadow" in shares or event.to_state == "shadow",
        paused_by=event.actor if event.to_state == "paused" else None,
        paused_from=paused_from,
        entered_at=event.occurred_at,
        weight=weight,
    )


def same_split(a: Rollout, b: Rollout) -> bool:
    """Whether two views of a rollout route requests alike (same rollout, state and traffic)."""
    return (a.rollout_id, a.state, a.candidate, a.stable, a.paused_from) == (
        b.rollout_id,
        b.state,
        b.candidate,
        b.stable,
        b.paused_from,
    ) and traffic(a) == traffic(b)


def announce(transition: Transition) -> RolloutChanged:
    """The event for one transition."""
    rollout = transition.rollout
    return RolloutChanged(
        model=rollout.model,
        rollout_id=rollout.rollout_id,
        candidate_version=rollout.candidate,
        stable_version=rollout.stable,
        from_state=transition.from_state,
        to_state=rollout.state,
        step=rollout.step,
        traffic=traffic(rollout),
        reason=transition.reason,
        evidence=dict(transition.evidence or {}),
        actor=transition.actor,
    )


def traffic(rollout: Rollout) -> list[TrafficShare]:
    """The traffic split a rollout implies."""
    if rollout.state == "promoted":
        return [TrafficShare(version=rollout.candidate, percent=100, role="stable")]
    if rollout.stable is None:
        return []
    stable = TrafficShare(version=rollout.stable, percent=100 - rollout.percent, role="stable")
    if rollout.state in ("rolled-back", "superseded"):
        return [stable]
    if rollout.state == "shadow" or rollout.paused_from == "shadow":
        return [stable, TrafficShare(version=rollout.candidate, percent=0, role="shadow")]
    return [stable, TrafficShare(version=rollout.candidate, percent=rollout.percent, role="canary")]


def start(
    model: str, rollout_id: str, candidate: int, stable: int | None, policy: RolloutPolicy, now: datetime
) -> Transition:
    """Begin a rollout: shadow first if the policy says so, else the first canary step.

    A model's first version has nothing to be compared with: it is promoted at once.
    """
    first: State = "promoted" if stable is None else "shadow" if policy.shadow else "canary"
    rollout = Rollout(
        model=model,
        rollout_id=rollout_id,
        candidate=candidate,
        stable=stable,
        state=first,
        step=0,
        steps=tuple(policy.steps),
        shadow=policy.shadow,
        paused_by=None,
        paused_from=None,
        entered_at=now,
    )
    reason = {
        "promoted": "approved: the model's first version, nothing to compare it with",
        "shadow": "approved: shadowing the stable version",
        "canary": f"approved: canary at {policy.steps[0]:g} %",
    }[first]
    return Transition(rollout, "pending", reason)


def _move(rollout: Rollout, now: datetime, **changes: Any) -> Rollout:
    return replace(rollout, entered_at=now, **changes)


def advance(rollout: Rollout, now: datetime, *, reason: str, evidence: Mapping[str, float] | None = None) -> Transition:
    """The next step: shadow → first canary step → … → promoted."""
    if rollout.state == "shadow":
        return Transition(_move(rollout, now, state="canary", step=0), "shadow", reason, evidence=evidence)
    if rollout.state != "canary":
        raise Refused(f"a {rollout.state} rollout does not advance")
    if rollout.weight is not None:  # set by hand: on to the first step above it
        following = [i for i, percent in enumerate(rollout.steps) if percent > rollout.weight]
    else:
        following = [] if rollout.steps[rollout.step] >= 100 else list(range(rollout.step + 1, len(rollout.steps)))
    if not following:
        promoted = _move(rollout, now, state="promoted", weight=None)
        return Transition(promoted, "canary", reason, evidence=evidence)
    moved = _move(rollout, now, step=following[0], weight=None)
    return Transition(moved, "canary", reason, evidence=evidence)


def on_analysis(
    rollout: Rollout,
    verdict: Literal["advance", "hold", "rollback"],
    now: datetime,
    *,
    bake_seconds: float,
    reason: str,
    evidence: Mapping[str, float] | None = None,
) -> Transition | None:
    """What a canary analysis changes: advance once the step has baked, roll back at once, or nothing."""
    if not rollout.live or rollout.state == "paused":
        return None
    if verdict == "rollback":
        return rollback(rollout, now, reason=reason, evidence=evidence)
    if verdict == "advance" and (now - rollout.entered_at).total_seconds() >= bake_seconds:
        return advance(rollout, now, reason=reason, evidence=evidence)
    return None


def rollback(
    rollout: Rollout,
    now: datetime,
    *,
    reason: str,
    actor: str = "deployer",
    evidence: Mapping[str, float] | None = None,
) -> Transition:
    """All traffic back on the stable version, in one transition."""
    if rollout.state not in LIVE and rollout.state != "promoted":
        raise Refused(f"the rollout of version {rollout.candidate} is already {rollout.state}")
    if rollout.stable is None:
        raise Refused(
            f"version {rollout.candidate} is the first version of {rollout.model}: there is nothing to go back to"
        )
    return Transition(_move(rollout, now, state="rolled-back"), rollout.state, reason, actor=actor, evidence=evidence)


def supersede(rollout: Rollout, now: datetime, *, newer: int) -> Transition:
    """Withdraw a running rollout because a newer version was approved."""
    if not rollout.live:
        raise Refused(f"the rollout of version {rollout.candidate} is not running")
    return Transition(_move(rollout, now, state="superseded"), rollout.state, f"superseded by version {newer}")


def command(
    rollout: Rollout,
    name: Literal["promote", "pause", "resume", "rollback"],
    now: datetime,
    *,
    actor: str,
    version: int | None = None,
    reason: str = "",
) -> Transition:
    """An operator's command; raises Refused with the reason when it makes no sense."""
    if version is not None and version != rollout.candidate:
        raise Refused(f"version {version} is not the candidate of the running rollout (version {rollout.candidate})")
    why = reason or f"{name} by {actor}"
    if name == "rollback":
        return rollback(rollout, now, reason=why, actor=actor)
    if not rollout.live:
        raise Refused(f"the rollout of version {rollout.candidate} is {rollout.state}; nothing to {name}")
    if name == "pause":
        if rollout.state == "paused":
            raise Refused(f"already paused by {rollout.paused_by}")
        paused = _move(rollout, now, state="paused", paused_by=actor, paused_from=rollout.state)
        return Transition(paused, rollout.state, why, actor=actor)
    if name == "resume":
        if rollout.state != "paused":
            raise Refused("the rollout is not paused")
        resumed = _move(rollout, now, state=rollout.paused_from or "canary", paused_by=None, paused_from=None)
        return Transition(resumed, "paused", why, actor=actor)
    if rollout.state == "paused" and rollout.paused_by != actor:
        raise Refused(f"paused by {rollout.paused_by}: only they may promote it (or resume it first)")
    promoted = _move(rollout, now, state="promoted", paused_by=None, paused_from=None)
    return Transition(promoted, rollout.state, why, actor=actor)


def set_weights(rollout: Rollout, shares: list[TrafficShare], now: datetime, *, actor: str, reason: str) -> Transition:
    """Put the running canary at the split an operator gives; the next advance goes to the first step above it.

    Refused unless the split names only the rollout's stable and candidate versions, adds up to
    100 % and the rollout is taking live traffic (each weight's 0-100 range is enforced where the
    command is parsed).
    """
    if rollout.state not in ("shadow", "canary"):
        raise Refused(f"version {rollout.candidate}'s rollout is {rollout.state}; weights apply to a running canary")
    ours = {rollout.candidate, rollout.stable}
    for share in shares:
        if share.version not in ours:
            raise Refused(
                f"version {share.version} is neither the stable ({rollout.stable}) nor the candidate "
                f"({rollout.candidate}) of the running rollout"
            )
    total = sum(s.percent for s in shares if s.role != "shadow")
    if abs(total - 100) > 1e-9:
        raise Refused(f"weights add up to {total:g} %, not 100 %")
    weight = sum(s.percent for s in shares if s.version == rollout.candidate and s.role != "shadow")
    step = max([i for i, percent in enumerate(rollout.steps) if percent <= weight], default=0)
    moved = _move(rollout, now, state="canary", step=step, weight=weight)
    return Transition(moved, rollout.state, reason or f"weights set by {actor}: candidate at {weight:g} %", actor=actor)


# ---------------------------------------------------------------- routing


@dataclass(frozen=True)
class Route:
    """Which version answers a request, and which one (if any) gets a shadow copy."""

    version: int
    role: Literal["stable", "canary"]
    shadow: int | None = None


def bucket(rollout_id: str, key: str) -> int:
    """A stable bucket 0..9999 for a sticky key within one rollout."""
    digest = hashlib.blake2b(f"{rollout_id}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def route(
    rollout: Rollout,
    request: Mapping[str, Any],
    *,
    sticky_key: str | None,
    excluded: Mapping[str, frozenset[str]],
    fallback_key: str,
) -> Route:
    """The version that answers a request: excluded segments always get stable; the rest by sticky bucket.

    `fallback_key` (the request id) is used when the request has no sticky key, so such requests
    split at the right rate without sticking.
    """
    stable = rollout.stable
    if stable is None or rollout.state == "promoted":
        return Route(rollout.candidate, "stable")
    if rollout.state in ("rolled-back", "superseded"):
        return Route(stable, "stable")
    shadow = rollout.candidate if (rollout.state == "shadow" or rollout.paused_from == "shadow") else None
    for field, values in excluded.items():
        if str(request.get(field)) in values:
            return Route(stable, "stable")
    if shadow is not None:
        return Route(stable, "stable", shadow=shadow)
    key = request.get(sticky_key) if sticky_key else None
    share = rollout.percent
    if bucket(rollout.rollout_id, str(key) if key is not None else fallback_key) < share * BUCKETS / 100:
        # The stable version scores a copy of the canary's requests (never returned): once labels
        # arrive, canary analysis compares the two versions' errors on the very same requests.
        return Route(rollout.candidate, "canary", shadow=stable if rollout.state == "canary" else None)
    return Route(stable, "stable")
