"""What on-call tools see of the alerter, without a server: the routes that forward to an
Alertmanager repeat in time, the bodies posted to it, the e-mail of a notification, matchers and
silence filters in Alertmanager's API shapes, refused configurations, and a group's
notifications delivered in order."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.alerter import alertmanager, app, domain, formats, mail
from services.alerter.config import ConfigError, Matcher, parse_config, plans
from tests.unit.alerter.test_domain import LINKS, TRACEPARENT, drift
from tests.unit.alerter.test_handlers import CONFIG, FakeReceivers, promoted, round_at

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def notification(status: str = "firing", group: dict[str, str] | None = None) -> dict[str, object]:
    alert = domain.raised_by(drift(), "ev-1", TRACEPARENT, None, LINKS)
    assert alert is not None
    member = domain.Member(
        fingerprint=alert.fingerprint, labels=alert.labels, annotations=alert.annotations, status=status,  # type: ignore[arg-type]
        starts_at=NOW - timedelta(minutes=10), ends_at=NOW if status == "resolved" else None,
    )  # fmt: skip
    return domain.payload("n-1", "oncall", group or {"model": "churn", "kind": "drift"}, [member], NOW)


def test_a_route_to_an_alertmanager_repeats_within_its_resend_interval_and_only_that_route() -> None:
    config = parse_config(
        "route:\n  receiver: am\n  repeat_interval: 4h\n  routes:\n    - matchers: ['team=\"payments\"']\n"
        "      receiver: hook\nreceivers:\n  - name: am\n"
        "    alertmanager: {url: 'http://am:9093', resend_interval: 2m}\n"
        "  - name: hook\n    webhook: {url: 'https://hooks.example.com/x'}\n"
    )
    found = plans(config)
    assert found["0"].repeat_interval == 120.0
    assert found["0.0"].repeat_interval == 4 * 3600.0, "a child with another receiver keeps the route's own"


def test_alertmanager_gets_firing_alerts_that_lapse_after_four_intervals_and_resolutions_with_their_end() -> None:
    [firing] = alertmanager.postable(notification("firing"), NOW, 60.0)
    assert firing["endsAt"] == "2026-12-06T12:04:00Z" and firing["startsAt"] == "2026-12-06T11:50:00Z"
    assert firing["labels"]["alertname"] == "ModelDriftDetected"
    assert firing["generatorURL"] == "http://registry/ui/models/churn/versions/3"
    assert set(firing) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    [resolved] = alertmanager.postable(notification("resolved"), NOW + timedelta(minutes=5), 60.0)
    assert resolved["endsAt"] == "2026-12-06T12:00:00Z"


def test_an_email_threads_per_group_and_carries_text_html_evidence_and_links(tmp_path: Path) -> None:
    config = parse_config(
        "route:\n  receiver: mail\nreceivers:\n  - name: mail\n    email:\n      to: [oncall@example.com]\n"
        "      from: modelbus@example.com\n      smarthost: smtp.example.com:587\n"
    )
    target = config.receivers[0].email
    assert target is not None and target.tls == "starttls"
    first = mail.message(target, "n-1", notification("firing"), "http://console/ui/alerts")
    then = mail.message(target, "n-2", notification("resolved"), "http://console/ui/alerts")
    other = mail.message(target, "n-3", notification("firing", {"model": "fraud"}), "http://console/ui/alerts")
    parsed = email.message_from_bytes(first.as_bytes(), policy=email.policy.default)
    assert parsed["Message-ID"] == "<n-1@modelbus>" and then["Message-ID"] == "<n-2@modelbus>"
    assert parsed["References"] == parsed["In-Reply-To"] == then["In-Reply-To"] != other["In-Reply-To"]
    assert parsed["Subject"] == then["Subject"] == "[modelbus] model=churn kind=drift"
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]
    text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "[FIRING] churn v3: drift in tenure" in text and '"drifted_share": 0.5' in text
    assert "http://registry/ui/models/churn/versions/3" in text and "/traces/4bf92f3577b34da6a3ce929d0e0e4736" in text
    assert '<a href="http://registry/ui/models/churn/versions/3">console</a>' in html


@pytest.mark.parametrize(
    "text", ['team="payments"', 'team!="payments"', 'severity=~"warning|critical"', 'kind!~"drift.*"']
)
def test_matchers_go_to_alertmanagers_shape_and_back_unchanged(text: str) -> None:
    shaped = formats.am_matcher(text)
    back = formats.from_am_matcher(
        shaped["name"], shaped["value"], is_regex=shaped["isRegex"], is_equal=shaped["isEqual"]
    )
    assert back == str(Matcher.parse(text))


def test_silences_are_filtered_as_alertmanager_filters_them() -> None:
    silence = ['model="churn"', 'kind=~"drift|performance"']
    assert formats.silence_matches_filter(silence, [Matcher.parse('model="churn"')])
    assert not formats.silence_matches_filter(silence, [Matcher.parse('model="fraud"')])
    assert formats.silence_matches_filter(silence, [Matcher.parse('team=""')]), "an absent label passes an empty value"
    assert formats.silence_matches_filter(silence, [])


@pytest.mark.parametrize(
    ("receiver", "path", "complaint"),
    [
        ("pagerduty: {}", "receivers[0].pagerduty.routing_key_env", "Field required"),
        ("pagerduty: {routing_key_env: NO_PD_KEY}", "receivers[0].pagerduty.routing_key_env", "NO_PD_KEY is not set"),
        ("alertmanager: {url: 'am:9093'}", "receivers[0].alertmanager.url", "should match pattern"),
        ("alertmanager: {url: 'http://am', resend_interval: 0s}", "receivers[0].alertmanager.resend_interval", "1s"),
        ("webhook: {url: 'http://x', format: opsgenie}", "receivers[0].webhook.format", "'modelbus' or 'alertmanager'"),
        ("email: {to: [nobody], from: a@b.c, smarthost: 'smtp:25'}", "receivers[0].email.to", "not e-mail addresses"),
        ("email: {to: [a@b.c], from: a@b.c, smarthost: smtp}", "receivers[0].email.smarthost", "should match pattern"),
    ],
)  # fmt: skip
def test_a_bad_receiver_is_refused_naming_its_path_and_line(receiver: str, path: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(f"route:\n  receiver: r\nreceivers:\n  - name: r\n    {receiver}\n")
    found = {issue.path: issue for issue in refused.value.issues}
    assert path in found and complaint in found[path].message, str(refused.value)
    assert found[path].line == 5, str(refused.value)


def test_a_routing_key_may_come_from_a_mounted_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k" * 32 + "\n")
    monkeypatch.setenv("PD_KEY_FILE", str(tmp_path / "key"))
    config = parse_config("route:\n  receiver: r\nreceivers:\n  - name: r\n    pagerduty: {routing_key_env: PD_KEY}\n")
    assert config.receivers[0].pagerduty is not None


async def test_a_groups_resolution_never_goes_out_before_its_firing() -> None:
    bus, receivers = app.in_memory(CONFIG), FakeReceivers(down=True)
    await bus.handle(drift())
    await round_at(bus, receivers, datetime.now(UTC) + timedelta(seconds=31))
    await bus.handle(promoted(4))
    await round_at(bus, receivers, datetime.now(UTC) + timedelta(seconds=31 + 301))
    assert len(bus.store.notifications) == 2 and not receivers.taken
    receivers.down = False
    assert await round_at(bus, receivers, datetime.now(UTC) + timedelta(seconds=1000)) == 2
    statuses = [json.dumps(payload["modelbus"]["status"]) for _, _, payload in receivers.taken]
    assert statuses == ['"firing"', '"resolved"']


def test_every_kind_of_destination_a_receiver_may_name_has_a_registered_sender() -> None:
    from services.alerter.config import Receiver
    from services.alerter.receivers import DESTINATIONS

    assert set(Receiver.model_fields) - {"name", "log"} == set(DESTINATIONS)
