"""The alerter's pure core: matchers, the routing tree, identity, grouping timings, inhibition,
silences, flushes and signatures."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from services.alerter import domain
from services.alerter.config import ConfigError, Matcher, mutes_everything, parse_config, plans, routes_for
from services.alerter.receivers import events_of, sign, verify
from shared.contract.events import AlertRaised, AlertResolved, DriftDetected, FeatureDrift, RolloutChanged, TrafficShare
from shared.contract.spec import Alerts

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
LINKS = domain.Links(api_url="http://registry", console_url="http://registry/ui")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def drift(model: str = "churn", version: int = 3, severity: str = "warning") -> DriftDetected:
    return DriftDetected(
        model=model,
        version=version,
        window_id="win-1",
        window_start=NOW,
        window_end=NOW,
        rows=1000,
        features=[
            FeatureDrift(feature="tenure", test="ks", statistic=0.4, p_value=1e-9, threshold=0.05, drifted=True),
            FeatureDrift(feature="plan", test="chi2", statistic=1.0, p_value=0.7, threshold=0.05, drifted=False),
        ],
        drifted_share=0.5,
        dataset_drift=True,
        severity=severity,  # type: ignore[arg-type]
    )


def rollout(model: str, to_state: str, candidate: int, stable: int) -> RolloutChanged:
    return RolloutChanged(
        model=model,
        rollout_id="ro-1",
        candidate_version=candidate,
        stable_version=stable,
        from_state="canary",
        to_state=to_state,  # type: ignore[arg-type]
        step=1,
        traffic=[TrafficShare(version=stable, percent=100, role="stable")],
        reason="error rate doubled",
    )


# ---------------------------------------------------------------- matchers and configuration


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('model="churn"', {"model": "churn"}, True),
        ("model=churn", {"model": "fraud"}, False),
        ('model!="churn"', {"model": "fraud"}, True),
        ('severity=~"warning|critical"', {"severity": "critical"}, True),
        ('severity=~"warn"', {"severity": "warning"}, False),  # the whole value must match
        ('kind!~"drift.*"', {"kind": "drift"}, False),
        ('team=""', {}, True),  # a missing label is the empty string
    ],
)
def test_matchers_follow_alertmanager(text: str, labels: dict[str, str], expected: bool) -> None:
    assert Matcher.parse(text).matches(labels) is expected


def test_regular_expressions_are_re2_linear_time_bounded_and_what_re2_refuses_is_refused_by_name() -> None:
    evil = Matcher.parse('model=~"(a+)+$"')  # backtracking engines take 2^n steps on a near miss
    began = time.perf_counter()
    assert not evil.matches({"model": "a" * 5000 + "b"})
    assert time.perf_counter() - began < 1.0, "RE2 matches in time linear in the value"
    for text, phrase in (
        (r"model=~(a)\1", "not a regular expression RE2 accepts (invalid escape sequence"),
        ('model=~"(?=a)a"', "not a regular expression RE2 accepts (invalid perl operator"),
        ('model=~"' + "a" * 1025 + '"', "the regular expression is 1025 characters; the limit is 1024"),
    ):
        with pytest.raises(ValueError, match=re.escape(phrase)):
            Matcher.parse(text)


@pytest.mark.parametrize(
    ("matchers", "everything"),
    [
        (['team=""'], True),
        (['model=~".*"', 'team!="payments"'], True),
        (['model=~".*"', 'team="payments"'], False),
        (['model=~".+"'], False),
        (['kind!~""'], False),
    ],
)
def test_a_silence_whose_matchers_all_match_the_empty_string_would_mute_everything(
    matchers: list[str], everything: bool
) -> None:
    assert mutes_everything([Matcher.parse(m) for m in matchers]) is everything


def test_a_bad_configuration_is_refused_with_every_error_by_path_and_line() -> None:
    text = """\
route:
  receiver: ops
  group_wait: soon
  routes:
    - matchers: ['team="payments"']
      receiver: payments
      routes:
        - matchers: ['severity=~"(critical"']
          receiver: pager
receivers:
  - name: ops
    log: true
  - name: ops
    kafka: {topic: alerts}
  - name: empty
inhibit_rules:
  - source_matchers: ['kind="rollback"']
    target_matchers: ['kind="drift"']
    equals: [model]
"""
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    found = {issue.path: (issue.line, issue.message) for issue in refused.value.issues}
    assert found["route.group_wait"][0] == 3 and "not a duration" in found["route.group_wait"][1]
    assert found["route.routes[0].routes[0].matchers"][0] == 8
    assert "not a regular expression RE2 accepts" in found["route.routes[0].routes[0].matchers"][1]
    assert "at least one of kafka, webhook, sns, pagerduty, alertmanager, email, log" in found["receivers[2]"][1]
    assert found["inhibit_rules[0].equals"] == (19, "unknown key")


def test_routes_must_name_known_receivers_and_secrets_must_be_set() -> None:
    text = """\
route:
  receiver: ops
  routes:
    - receiver: nobody
receivers:
  - name: ops
    webhook: {url: "https://hooks.example.com/x", secret_env: MODELBUS_TEST_UNSET_SECRET}
"""
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    messages = {issue.path: issue.message for issue in refused.value.issues}
    assert messages["route.routes[0].receiver"] == "no receiver is called 'nobody'"
    assert messages["receivers[0].webhook.secret_env"].startswith(
        "MODELBUS_TEST_UNSET_SECRET is not set (nor MODELBUS_TEST_UNSET_SECRET_FILE"
    )


TREE = """\
route:
  receiver: ops
  group_by: [model]
  group_interval: 2m
  routes:
    - matchers: ['team="payments"']
      receiver: payments
      continue: true
      routes:
        - matchers: ['severity="critical"']
          receiver: payments-pager
          repeat_interval: 30m
    - matchers: ['kind=~"drift|performance"']
      receiver: ml
      group_by: ['...']
    - matchers: ['kind="dead-letter"']
      receiver: platform
receivers:
  - {name: ops, log: true}
  - {name: payments, log: true}
  - {name: payments-pager, log: true}
  - {name: ml, log: true}
  - {name: platform, log: true}
"""


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        # continue: the payments route takes it, and the next sibling is tried too
        ({"team": "payments", "kind": "drift", "severity": "warning"}, ["0.0", "0.1"]),
        # the deepest match takes it; continue on the parent still lets the sibling try
        ({"team": "payments", "kind": "drift", "severity": "critical"}, ["0.0.0", "0.1"]),
        # without continue, the first match ends the search
        ({"team": "ml", "kind": "drift"}, ["0.1"]),
        ({"team": "ml", "kind": "training-failed"}, ["0"]),  # no child matches: the root
    ],
)
def test_an_alert_takes_the_routes_alertmanager_would_give_it(labels: dict[str, str], expected: list[str]) -> None:
    assert routes_for(parse_config(TREE), labels) == expected


def test_every_kind_has_an_alertname_that_routes_can_match() -> None:
    config = parse_config(
        "route:\n  receiver: ops\n  routes:\n    - matchers: ['alertname=\"CanaryRolledBack\"']\n"
        "      receiver: pager\nreceivers:\n  - {name: ops, log: true}\n  - {name: pager, log: true}\n"
    )
    rolled_back = domain.raised_by(rollout("churn", "rolled-back", 5, 4), "ev", None, None, LINKS)
    drifted = domain.raised_by(drift(), "ev", None, None, LINKS)
    assert rolled_back is not None and drifted is not None
    assert (rolled_back.labels["alertname"], drifted.labels["alertname"]) == ("CanaryRolledBack", "ModelDriftDetected")
    assert routes_for(config, rolled_back.labels) == ["0.0"] and routes_for(config, drifted.labels) == ["0"]
    assert all(name[0].isupper() and name.isalnum() for name in domain.ALERTNAMES.values())


def test_routes_inherit_what_they_leave_unset() -> None:
    found = plans(parse_config(TREE))
    assert found["0"].group_by == ("model",) and found["0"].group_wait == 30.0
    assert found["0.0.0"].receiver == "payments-pager" and found["0.0.0"].repeat_interval == 1800.0
    assert found["0.0.0"].group_interval == 120.0 and found["0.0.0"].group_by == ("model",)
    assert found["0.1"].group_by == ("...",)


def test_the_tree_reads_as_an_alertmanager_configuration_durations_and_matchers_written_as_alertmanager_does() -> None:
    written = yaml.safe_load(parse_config(TREE + "resolve_timeout: 90m\n").as_alertmanager_yaml())
    assert written["global"] == {"resolve_timeout": "1h30m"}
    root = written["route"]
    assert (root["receiver"], root["group_by"], root["group_wait"], root["group_interval"]) == (
        "ops", ["model"], "30s", "2m",
    )  # fmt: skip
    assert root["repeat_interval"] == "4h", "the root's defaults are written out"
    payments = root["routes"][0]
    assert payments == {
        "receiver": "payments", "matchers": ['team="payments"'], "continue": True,
        "routes": [{"receiver": "payments-pager", "matchers": ['severity="critical"'], "repeat_interval": "30m"}],
    }  # fmt: skip
    assert root["routes"][1]["group_by"] == ["..."]
    assert [r["name"] for r in written["receivers"]] == ["ops", "payments", "payments-pager", "ml", "platform"]
    assert all(set(r) == {"name"} for r in written["receivers"]), "modelbus' destinations have no Alertmanager form"
    assert written["inhibit_rules"][0]["target_matchers"] == ['kind=~"drift|performance|canary-failed"']


@pytest.mark.parametrize("value", ['say "hi"', "back\\slash", "two\nlines", r"a\.b|c\d+", "naïve ✓"])
def test_a_matcher_written_out_reads_back_the_same(value: str) -> None:
    matcher = Matcher("note", "=~", value, None)
    again = Matcher.parse(str(matcher))
    assert (again.label, again.op, again.value) == ("note", "=~", value)


# ---------------------------------------------------------------- alerts from events


def test_a_drift_becomes_an_alert_labelled_from_the_spec_and_repeats_keep_its_identity() -> None:
    spec_labels = Alerts(team="risk", severity="critical", labels={"tier": "gold"})
    alert = domain.raised_by(drift(), "ev-1", TRACEPARENT, spec_labels, LINKS)
    assert alert is not None
    assert alert.labels == {
        "alertname": "ModelDriftDetected",
        "model": "churn",
        "version": "3",
        "kind": "drift",
        "severity": "warning",
        "team": "risk",
        "tier": "gold",
        "workspace": "default",
    }
    assert alert.annotations["summary"] == "churn v3: drift in tenure (1000 rows)"
    assert json.loads(alert.annotations["evidence"])["features"][0]["feature"] == "tenure"
    assert alert.annotations["lineage"] == "http://registry/v1/models/churn/versions/3/lineage"
    assert alert.annotations["console"] == "http://registry/ui/models/churn/versions/3"
    assert alert.annotations["trace"] == "http://registry/ui/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    again = domain.raised_by(drift(), "ev-2", None, spec_labels, LINKS)
    assert again is not None and again.fingerprint == alert.fingerprint
    other = domain.raised_by(drift(version=4), "ev-3", None, spec_labels, LINKS)
    assert other is not None and other.fingerprint != alert.fingerprint
    assert domain.fingerprint({"a": "1", "b": "2"}) == domain.fingerprint({"b": "2", "a": "1"})


def test_a_repeat_of_a_firing_alert_is_not_news_but_firing_again_after_resolving_is() -> None:
    assert domain.is_news(None) and domain.is_news("resolved") and not domain.is_news("firing")


def test_a_promotion_resolves_older_versions_alerts_of_that_model_only() -> None:
    cleared = domain.resolved_by(rollout("churn", "promoted", 5, 4))
    assert cleared is not None and cleared.reason == "version 5 was promoted"
    assert cleared.clears({"model": "churn", "kind": "drift", "version": "4"})
    assert not cleared.clears({"model": "churn", "kind": "drift", "version": "5"})
    assert not cleared.clears({"model": "fraud", "kind": "drift", "version": "4"})
    assert not cleared.clears({"model": "churn", "kind": "training-failed"})
    assert domain.resolved_by(rollout("churn", "canary", 5, 4)) is None


def test_a_rollback_raises_a_critical_alert() -> None:
    alert = domain.raised_by(rollout("churn", "rolled-back", 5, 4), "ev", None, None, LINKS)
    assert alert is not None and alert.labels["kind"] == "rollback" and alert.severity == "critical"
    assert alert.labels["version"] == "5" and "v4 keeps serving" in alert.annotations["summary"]


# ---------------------------------------------------------------- grouping timings


def test_a_new_group_waits_group_wait_then_changes_come_at_most_every_group_interval() -> None:
    created = NOW
    first = domain.due_after_change(NOW, created, None, None, group_wait=30, group_interval=300)
    assert first == NOW + timedelta(seconds=30)
    # More alerts during group_wait do not push the first notification back.
    assert domain.due_after_change(NOW + timedelta(seconds=20), created, None, first, 30, 300) == first
    # After a notification, a change waits for group_interval since it...
    notified = NOW + timedelta(seconds=30)
    later = domain.due_after_change(notified + timedelta(seconds=10), created, notified, None, 30, 300)
    assert later == notified + timedelta(seconds=300)
    # ... but never delays a group already due sooner (its repeat, say).
    repeat_due = notified + timedelta(seconds=100)
    assert (
        domain.due_after_change(notified + timedelta(seconds=10), created, notified, repeat_due, 30, 300) == repeat_due
    )
    # Long after the last notification, a change is due at once.
    assert domain.due_after_change(
        notified + timedelta(hours=1), created, notified, None, 30, 300
    ) == notified + timedelta(hours=1)


def test_after_a_flush_firing_groups_repeat_and_muted_ones_are_looked_at_again() -> None:
    firing = domain.Flush(send=[], notified={"a": "firing"})
    assert domain.due_after_flush(NOW, firing, False, 3600, 300) == NOW + timedelta(hours=1)
    assert domain.due_after_flush(NOW, domain.Flush(send=[]), True, 3600, 300) == NOW + timedelta(seconds=300)
    assert domain.due_after_flush(NOW, domain.Flush(send=[]), False, 3600, 300) is None


# ---------------------------------------------------------------- inhibition, silences, flushes


def test_a_rollback_inhibits_its_models_drift_alerts_only() -> None:
    config = parse_config("{}")  # the default rule: a rollback mutes drift/performance of its model
    rollback = {"model": "churn", "kind": "rollback", "severity": "critical"}
    targets = {
        "d1": {"model": "churn", "kind": "drift", "version": "5"},
        "d2": {"model": "fraud", "kind": "drift", "version": "2"},
        "t1": {"model": "churn", "kind": "training-failed"},
    }
    muted = domain.inhibited(targets, {"r1": rollback, **targets}, config.inhibit_rules)
    assert muted == {"d1": "r1"}
    assert domain.inhibited(targets, targets, config.inhibit_rules) == {}  # no source firing


def test_a_silence_mutes_matching_alerts_only_while_it_runs() -> None:
    silence = domain.Silence(
        "s1",
        [Matcher.parse('model="churn"'), Matcher.parse('kind=~"drift|performance"')],
        NOW,
        NOW + timedelta(hours=2),
    )
    assert silence.mutes({"model": "churn", "kind": "drift"}, NOW + timedelta(hours=1))
    assert not silence.mutes({"model": "churn", "kind": "rollback"}, NOW + timedelta(hours=1))
    assert not silence.mutes({"model": "churn", "kind": "drift"}, NOW + timedelta(hours=2))
    assert not silence.mutes({"model": "churn", "kind": "drift"}, NOW - timedelta(seconds=1))


def member(fp: str, status: str) -> domain.Member:
    return domain.Member(
        fingerprint=fp,
        labels={"model": "churn", "kind": "drift", "fp": fp},
        annotations={"summary": f"alert {fp}"},
        status=status,  # type: ignore[arg-type]
        starts_at=NOW,
        ends_at=NOW if status == "resolved" else None,
        source_event_type="DriftDetected",
        source_event_id=f"ev-{fp}",
        resolved_reason="version 5 was promoted" if status == "resolved" else None,
    )


def test_a_flush_sends_the_unmuted_firing_alerts_and_those_resolved_since_notified() -> None:
    members = [member("a", "firing"), member("b", "firing"), member("c", "resolved"), member("d", "resolved")]
    flushed = domain.flush(members, notified={"c": "firing"}, muted={"b"})
    assert [m.fingerprint for m in flushed.send] == ["a", "c"]  # d was never notified as firing
    assert flushed.notified == {"a": "firing"}
    assert domain.flush([member("b", "firing")], {}, {"b"}).send == []


def test_one_notification_carries_the_whole_group_slack_compatible_and_as_events() -> None:
    body = domain.payload("n-1", "ops", {"model": "churn"}, [member("a", "firing"), member("c", "resolved")], NOW)
    assert body["text"].startswith("[FIRING:1] model=churn (1 resolved)")
    assert body["blocks"][0]["type"] == "header" and "alert a" in body["blocks"][1]["text"]["text"]
    assert [a["fingerprint"] for a in body["modelbus"]["alerts"]] == ["a", "c"]
    raised, resolved = events_of(json.loads(json.dumps(body)))
    assert isinstance(raised, AlertRaised) and raised.source_event_id == "ev-a"
    assert isinstance(resolved, AlertResolved) and resolved.reason == "version 5 was promoted"


def test_a_webhook_signature_verifies_and_a_tampered_or_old_one_does_not() -> None:
    body = b'{"text":"[FIRING:1] model=churn"}'
    stamp = str(int(datetime.now(UTC).timestamp()))
    signature = sign("s3cret", stamp, body)
    assert signature.startswith("v1=") and verify("s3cret", stamp, body, signature)
    assert not verify("s3cret", stamp, body.replace(b"churn", b"fraud"), signature)
    assert not verify("other", stamp, body, signature)
    old = str(int(datetime.now(UTC).timestamp()) - 3600)
    assert not verify("s3cret", old, body, sign("s3cret", old, body))
