"""Serving's routing: the split a RolloutChanged announces, applied without the deployer's tables,
routes every request as the deployer's own rollout does; sticky keys stick, excluded segments and
shadows go to stable, the split holds its rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.deployer import domain
from shared.contract.events import TrafficShare
from shared.contract.spec import Rollout as Policy

NOW = datetime(2026, 12, 1, tzinfo=UTC)
EXCLUDED = {"region": frozenset({"eu-central"})}


def transitions(shadow: bool) -> list[domain.Transition]:
    """A rollout's life: start, each step, a pause and resume, then promotion; and a rollback."""
    started = domain.start("churn", "ro-1", 2, 1, Policy(shadow=shadow), NOW)
    moves = [started]
    rollout = started.rollout
    for step in range(5):
        later = NOW + timedelta(minutes=step + 1)
        if step == 1:
            moves.append(domain.command(rollout, "pause", later, actor="ops", version=None, reason=""))
            moves.append(domain.command(moves[-1].rollout, "resume", later, actor="ops", version=None, reason=""))
            rollout = moves[-1].rollout
        moved = domain.advance(rollout, later + timedelta(seconds=1), reason="ok")
        moves.append(moved)
        rollout = moved.rollout
        if rollout.state == "promoted":
            break
    moves.append(domain.rollback(started.rollout, NOW + timedelta(hours=1), reason="worse", actor="monitor"))
    return moves


def route_all(rollout: domain.Rollout, rows: int = 2000) -> list[domain.Route]:
    return [
        domain.route(
            rollout, {"customer_id": f"c-{i}"}, sticky_key="customer_id", excluded=EXCLUDED, fallback_key=f"r-{i}"
        )
        for i in range(rows)
    ]


@pytest.mark.parametrize("shadow", [False, True])
def test_the_announced_split_routes_every_request_as_the_deployers_rollout_does(shadow: bool) -> None:
    for transition in transitions(shadow):
        applied = domain.rollout_of(domain.announce(transition))
        assert domain.same_split(applied, transition.rollout), transition.rollout.state
        assert route_all(applied) == route_all(transition.rollout), transition.rollout.state


def test_a_sticky_key_sees_one_version_for_the_whole_rollout_and_the_rate_holds() -> None:
    canary = domain.start("churn", "ro-2", 2, 1, Policy(steps=[25, 50, 100]), NOW).rollout
    first, again = route_all(canary), route_all(canary)
    assert first == again
    share = sum(r.version == 2 for r in first) / len(first)
    assert 0.22 < share < 0.28


def test_an_excluded_segment_always_gets_the_stable_version() -> None:
    canary = domain.start("churn", "ro-3", 2, 1, Policy(steps=[100]), NOW).rollout
    kept = [
        domain.route(
            canary,
            {"region": "eu-central", "customer_id": f"c-{i}"},
            sticky_key="customer_id",
            excluded=EXCLUDED,
            fallback_key="r",
        )
        for i in range(200)
    ]
    assert {r.version for r in kept} == {1}


def test_a_shadow_rollout_answers_from_stable_and_mirrors_to_the_candidate() -> None:
    shadowed = domain.start("churn", "ro-4", 2, 1, Policy(shadow=True), NOW).rollout
    assert {(r.version, r.role, r.shadow) for r in route_all(shadowed, 100)} == {(1, "stable", 2)}


def test_a_paused_canary_keeps_its_split_from_the_event_alone() -> None:
    event = domain.announce(domain.start("churn", "ro-5", 2, 1, Policy(), NOW)).model_copy(
        update={
            "to_state": "paused",
            "traffic": [
                TrafficShare(version=1, percent=90, role="stable"),
                TrafficShare(version=2, percent=10, role="canary"),
            ],
        }
    )
    applied = domain.rollout_of(event)
    assert (applied.paused_from, applied.percent) == ("canary", 10.0)
