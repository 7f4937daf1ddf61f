"""The PagerDuty receiver against a loopback Events API v2: every body is checked against the
Events v2 schema (tests/support/pagerduty_events_v2.json, from PagerDuty's reference); the server
answers 429 with Retry-After first, as PagerDuty does when throttling."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest

from services.alerter import domain
from services.alerter.config import ConfigError, parse_config
from services.alerter.receivers import DeliveryError, Receivers
from shared.contract.events import DriftDetected, FeatureDrift, RolloutChanged
from shared.runtime.settings import Settings
from tests.integration.conftest import free_port
from tests.support.loopback import LoopbackPost

SCHEMA = json.loads((Path(__file__).parents[1] / "support/pagerduty_events_v2.json").read_text())
KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
LINKS = domain.Links(api_url="http://registry:8080", console_url="http://console:8087/ui")


@dataclass
class EventsApi(LoopbackPost):
    """A loopback Events API v2: validates each body, throttles the first `throttle` requests."""

    throttle: int = 0
    bodies: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    seen: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/enqueue"

    def on_post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        event = json.loads(body)
        self.seen += 1
        if self.seen <= self.throttle:
            message = "Requests for this service are arriving too quickly."
            return self._answer(429, {"status": "throttle event", "message": message}, {"Retry-After": "1"})
        try:
            jsonschema.validate(event, SCHEMA, format_checker=jsonschema.FormatChecker())
        except jsonschema.ValidationError as exc:
            self.refused.append(exc.message)
            return self._answer(
                400, {"status": "invalid event", "message": "Event object is invalid", "errors": [exc.message]}
            )
        self.bodies.append((time.monotonic(), event))
        return self._answer(
            202, {"status": "success", "message": "Event processed", "dedup_key": event.get("dedup_key")}
        )

    @staticmethod
    def _answer(
        status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        return status, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}


@pytest.fixture
def events_api() -> Iterator[EventsApi]:
    found = EventsApi(free_port())
    found.start()
    yield found
    found.stop()


def receivers_for(url: str) -> Receivers:
    config = parse_config(
        "route:\n  receiver: pd\nreceivers:\n  - name: pd\n    pagerduty:\n      routing_key_env: PD_ROUTING_KEY\n"
        f"      url: {url}\n"
    )
    return Receivers(config, SimpleNamespace(settings=Settings(console_url="http://console:8087/ui")))  # type: ignore[arg-type]


def member(event: Any, status: str) -> domain.Member:
    alert = domain.raised_by(event, "ev-1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None, LINKS)
    assert alert is not None
    now = datetime.now(UTC)
    return domain.Member(
        fingerprint=alert.fingerprint, labels=alert.labels, annotations=alert.annotations, status=status,  # type: ignore[arg-type]
        starts_at=now - timedelta(minutes=3), ends_at=now if status == "resolved" else None, severity=alert.severity,
    )  # fmt: skip


def drift() -> DriftDetected:
    now = datetime.now(UTC)
    return DriftDetected(
        model="churn", version=3, window_id="w", window_start=now, window_end=now, rows=500,
        features=[FeatureDrift(feature="tenure", test="ks", statistic=0.4, p_value=1e-9, threshold=0.05, drifted=True)],
        drifted_share=1.0, dataset_drift=True, severity="warning",
    )  # fmt: skip


def rollback() -> RolloutChanged:
    return RolloutChanged(
        model="churn", rollout_id="ro", candidate_version=4, stable_version=3, from_state="canary",
        to_state="rolled-back", step=1, traffic=[], reason="error rate 4 % against 1 %", actor="deployer",
    )  # fmt: skip


async def test_firing_alerts_trigger_with_their_fingerprint_and_resolve_after_a_throttle(
    events_api: EventsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PD_ROUTING_KEY", KEY)
    events_api.throttle = 1
    receivers = receivers_for(events_api.url)
    drifted, rolled_back = member(drift(), "firing"), member(rollback(), "firing")
    try:
        began = time.monotonic()
        group = {"model": "churn"}
        await receivers.deliver(
            "pd", "n-1", domain.payload("n-1", "pd", group, [drifted, rolled_back], datetime.now(UTC))
        )
        resolved = member(drift(), "resolved")
        await receivers.deliver("pd", "n-2", domain.payload("n-2", "pd", group, [resolved], datetime.now(UTC)))
    finally:
        await receivers.close()
    assert events_api.refused == []
    sent = [body for _, body in events_api.bodies]
    assert [(b["event_action"], b["dedup_key"]) for b in sent] == [
        ("trigger", drifted.fingerprint),
        ("trigger", rolled_back.fingerprint),
        ("resolve", drifted.fingerprint),
    ]
    assert events_api.bodies[0][0] - began >= 1.0, "the 429's Retry-After: 1 was waited for"
    first, second = sent[0]["payload"], sent[1]["payload"]
    assert (first["severity"], second["severity"]) == ("warning", "critical")
    assert first["summary"].startswith("churn v3: drift in tenure") and first["source"] == "modelbus/churn@3"
    assert first["class"] == "ModelDriftDetected" and first["custom_details"]["evidence"]["dataset_drift"] is True
    assert {link["text"]: link["href"] for link in sent[0]["links"]} == {
        "modelbus console": "http://console:8087/ui/models/churn/versions/3",
        "lifecycle trace": "http://console:8087/ui/traces/4bf92f3577b34da6a3ce929d0e0e4736",
        "lineage (registry API)": "http://registry:8080/v1/models/churn/versions/3/lineage",
    }
    assert all(b["routing_key"] == KEY for b in sent)


async def test_a_refused_event_or_a_missing_key_fails_the_delivery_so_it_stays_pending(
    events_api: EventsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PD_ROUTING_KEY", KEY)
    receivers = receivers_for(events_api.url)
    monkeypatch.delenv("PD_ROUTING_KEY")  # a key taken away after start: the delivery fails, the log retries
    payload = domain.payload("n-3", "pd", {"model": "churn"}, [member(drift(), "firing")], datetime.now(UTC))
    try:
        with pytest.raises(DeliveryError, match="PD_ROUTING_KEY is not set"):
            await receivers.deliver("pd", "n-3", payload)
        monkeypatch.setenv("PD_ROUTING_KEY", "too-short")
        with pytest.raises(DeliveryError, match="400"):
            await receivers.deliver("pd", "n-3", payload)
        events_api.throttle = events_api.seen + 5
        monkeypatch.setenv("PD_ROUTING_KEY", KEY)
        with pytest.raises(DeliveryError, match="429"):
            await receivers.deliver("pd", "n-3", payload)
    finally:
        await receivers.close()
    assert events_api.bodies == [] and events_api.refused and "too-short" in events_api.refused[0]


def test_a_pagerduty_receiver_without_its_routing_key_is_a_config_error_naming_its_line() -> None:
    text = "route:\n  receiver: pd\nreceivers:\n  - name: pd\n    pagerduty:\n      url: https://events.pagerduty.com/v2/enqueue\n"
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    assert "routing_key_env" in str(refused.value) and "line 6" in str(refused.value), str(refused.value)
