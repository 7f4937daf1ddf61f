"""The rollout state machine and the sticky split, without servers."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from services.deployer import domain
from shared.contract.events import TrafficShare
from shared.contract.spec import Rollout as Policy

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
POLICY = Policy(steps=[10, 25, 50, 100], bake_seconds=60)


def canary(**policy: object) -> domain.Rollout:
    return domain.start("churn", "ro-1", 3, 2, POLICY.model_copy(update=policy), T0).rollout


def test_an_approved_version_starts_at_ten_percent_and_the_first_version_is_promoted_at_once() -> None:
    rollout = canary()
    assert rollout.state == "canary" and rollout.percent == 10
    assert [(s.version, s.percent, s.role) for s in domain.traffic(rollout)] == [(2, 90, "stable"), (3, 10, "canary")]
    first = domain.start("churn", "ro-0", 1, None, POLICY, T0)
    assert first.rollout.state == "promoted" and "first version" in first.reason


def test_steps_advance_only_after_their_bake_time_and_end_promoted() -> None:
    rollout = canary()
    assert domain.on_analysis(rollout, "advance", T0 + timedelta(seconds=30), bake_seconds=60, reason="ok") is None
    percents = []
    now = T0
    while rollout.state != "promoted":
        now += timedelta(seconds=61)
        moved = domain.on_analysis(rollout, "advance", now, bake_seconds=60, reason="healthy")
        assert moved is not None
        rollout = moved.rollout
        percents.append(rollout.percent)
    assert percents == [25, 50, 100, 100] and rollout.state == "promoted"
    assert [(s.version, s.percent) for s in domain.traffic(rollout)] == [(3, 100)]


def test_a_rollback_verdict_puts_all_traffic_on_the_previous_champion_in_one_transition() -> None:
    rollout = domain.advance(canary(), T0, reason="ok").rollout  # at 25 %
    moved = domain.on_analysis(rollout, "rollback", T0, bake_seconds=60, reason="error rate doubled")
    assert moved is not None and moved.from_state == "canary" and moved.rollout.state == "rolled-back"
    assert [(s.version, s.percent, s.role) for s in domain.traffic(moved.rollout)] == [(2, 100, "stable")]


def test_shadow_first_then_canary() -> None:
    rollout = canary(shadow=True)
    assert rollout.state == "shadow" and rollout.percent == 0
    assert [(s.version, s.percent, s.role) for s in domain.traffic(rollout)] == [(2, 100, "stable"), (3, 0, "shadow")]
    assert domain.advance(rollout, T0, reason="shadow agrees").rollout.state == "canary"


def test_commands_that_make_no_sense_are_refused_and_change_nothing() -> None:
    rollout = canary()
    paused = domain.command(rollout, "pause", T0, actor="olga").rollout
    with pytest.raises(domain.Refused, match="paused by olga"):
        domain.command(paused, "promote", T0, actor="pete")
    with pytest.raises(domain.Refused, match="already paused"):
        domain.command(paused, "pause", T0, actor="pete")
    with pytest.raises(domain.Refused, match="not the candidate"):
        domain.command(paused, "rollback", T0, actor="pete", version=9)
    assert domain.command(paused, "promote", T0, actor="olga").rollout.state == "promoted"
    resumed = domain.command(paused, "resume", T0, actor="pete").rollout
    assert resumed.state == "canary" and resumed.percent == 10
    assert domain.on_analysis(paused, "advance", T0 + timedelta(hours=1), bake_seconds=60, reason="x") is None
    done = domain.command(rollout, "rollback", T0, actor="olga").rollout
    with pytest.raises(domain.Refused, match="already rolled-back"):
        domain.command(done, "rollback", T0, actor="olga")
    with pytest.raises(ValueError, match="less than or equal to 100"):
        TrafficShare(version=2, percent=120, role="stable")
    with pytest.raises(domain.Refused, match="neither the stable"):
        domain.set_weights(rollout, [TrafficShare(version=7, percent=100, role="stable")], T0, actor="olga", reason="")
    with pytest.raises(domain.Refused, match="add up to 90"):
        split = [TrafficShare(version=2, percent=80, role="stable"), TrafficShare(version=3, percent=10, role="canary")]
        domain.set_weights(rollout, split, T0, actor="olga", reason="")
    with pytest.raises(domain.Refused, match="weights apply to a running canary"):
        split = [TrafficShare(version=2, percent=70, role="stable"), TrafficShare(version=3, percent=30, role="canary")]
        domain.set_weights(paused, split, T0, actor="olga", reason="")


def test_weights_set_by_hand_hold_until_the_next_advance_which_goes_to_the_step_above() -> None:
    split = [TrafficShare(version=2, percent=70, role="stable"), TrafficShare(version=3, percent=30, role="canary")]
    moved = domain.set_weights(canary(), split, T0, actor="olga", reason="")
    assert moved.rollout.percent == 30 and "olga" in moved.reason
    assert [(s.version, s.percent) for s in domain.traffic(moved.rollout)] == [(2, 70), (3, 30)]
    assert domain.advance(moved.rollout, T0, reason="ok").rollout.percent == 50
    everything = [TrafficShare(version=3, percent=100, role="canary")]
    at_full = domain.set_weights(canary(), everything, T0, actor="olga", reason="").rollout
    assert domain.advance(at_full, T0, reason="ok").rollout.state == "promoted"


def test_a_newer_approved_version_supersedes_the_running_rollout() -> None:
    moved = domain.supersede(canary(), T0, newer=4)
    assert moved.rollout.state == "superseded" and "version 4" in moved.reason
    assert [(s.version, s.percent) for s in domain.traffic(moved.rollout)] == [(2, 100)]


def test_the_model_follows_its_newest_rollout_but_not_one_superseded() -> None:
    state = domain.ModelState("churn", champion=2, rollout_id="ro-0")
    running = canary()
    assert domain.after_save(state, running) == domain.ModelState("churn", champion=2, rollout_id="ro-1")
    promoted = domain.command(running, "promote", T0, actor="ops").rollout
    assert domain.after_save(state, promoted).champion == 3
    rolled_back = domain.on_analysis(running, "rollback", T0, bake_seconds=60, reason="worse")
    assert rolled_back is not None and domain.after_save(state, rolled_back.rollout).champion == 2
    superseded = domain.supersede(running, T0, newer=4).rollout
    assert domain.after_save(state, superseded) == state


def test_ten_thousand_keys_split_within_two_percent_and_each_key_sticks() -> None:
    rollout = canary()
    rng = random.Random(5)
    keys = [f"customer-{rng.randrange(10**9)}" for _ in range(10_000)]

    def version(key: str, region: str = "north") -> int:
        request = {"customer_id": key, "region": region}
        excluded = {"region": frozenset({"eu-central"})}
        chosen = domain.route(
            rollout, request, sticky_key="customer_id", excluded=excluded, fallback_key=str(uuid.uuid4())
        )
        return chosen.version

    first = [version(k) for k in keys]
    share = Counter(first)[3] / len(keys)
    assert abs(share - 0.10) <= 0.02, share
    assert [version(k) for k in keys[:2000]] == first[:2000], "a key always sees one version"
    assert {version(k, "eu-central") for k in keys[:2000]} == {2}, "excluded segments get stable"


def test_shadow_routes_answer_with_stable_and_copy_to_the_candidate() -> None:
    rollout = canary(shadow=True)
    chosen = domain.route(rollout, {"customer_id": "c1"}, sticky_key="customer_id", excluded={}, fallback_key="r")
    assert (chosen.version, chosen.role, chosen.shadow) == (2, "stable", 3)
