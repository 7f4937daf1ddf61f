"""The alerter against the real Kafka and PostgreSQL: events in, grouped and signed notifications
out, none lost when a receiver is down or the alerter is killed."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr
from sqlalchemy import select

from services.alerter import tables as alerter_store
from services.alerter.app import AlerterService
from services.alerter.app import build as build_alerter
from services.alerter.config import parse_config
from services.alerter.receivers import NOTIFICATION_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from shared.contract import topics
from shared.contract.envelope import decode
from shared.contract.events import (
    AlertRaised,
    DriftDetected,
    Event,
    FeatureDrift,
    ModelSpecApplied,
    PerformanceDegraded,
    RolloutChanged,
    TrafficShare,
)
from shared.contract.spec import Alerts
from shared.ops.tools import read_all
from shared.runtime.broker import aiokafka_options
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec
from tests.integration.conftest import eventually, free_port
from tests.support.loopback import LoopbackPost

ROOT = Path(__file__).resolve().parents[2]
SECRET_ENV = "MODELBUS_IT_WEBHOOK_SECRET"
SECRET = "it-webhook-secret"


@dataclass
class Hook(LoopbackPost):
    """A local webhook endpoint that records what it receives (and can be switched off)."""

    received: list[tuple[dict[str, str], bytes, float]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def on_post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        self.received.append((headers, body, time.time()))
        return 200, b"", {}

    def notifications(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, _ in self.received]


@pytest.fixture
def hook() -> Iterator[Hook]:
    found = Hook(free_port())
    yield found
    found.stop()


@pytest.fixture(autouse=True)
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def config_text(
    hook: Hook, *, group_wait: str = "0.2s", group_interval: str = "2s", extra: str = "", payments_topic: str = "alerts"
) -> str:
    return f"""
route:
  receiver: ops
  group_by: [model, kind]
  group_wait: {group_wait}
  group_interval: {group_interval}
  repeat_interval: 1h
  routes:
    - matchers: ['team="payments"']
      receiver: payments
receivers:
  - name: ops
    kafka: {{topic: alerts}}
    webhook: {{url: "{hook.url}", secret_env: {SECRET_ENV}}}
    log: true
  - name: payments
    kafka: {{topic: {payments_topic}}}
{extra}
"""


@pytest.fixture
async def alerter_of(settings: Settings) -> AsyncIterator[Any]:
    started: list[AlerterService] = []

    async def start(text: str, **updates: Any) -> AlerterService:
        tuned = settings.model_copy(
            update={"service_name": "alerter", "otlp_endpoint": None, "alerter_tick_seconds": 0.1, **updates}
        )
        service = build_alerter(tuned, config=parse_config(text))
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


async def publish(settings: Settings, *events: Event) -> list[str]:
    bus = Bus(settings.model_copy(update={"service_name": "it-producer"}))
    await bus.start()
    try:
        return [await bus.publish(event) for event in events]
    finally:
        await bus.stop()


def drift(model: str, version: int = 1, severity: str = "warning") -> DriftDetected:
    now = datetime.now(UTC)
    return DriftDetected(
        model=model,
        version=version,
        window_id=f"win-{uuid.uuid4().hex[:8]}",
        window_start=now,
        window_end=now,
        rows=1000,
        features=[FeatureDrift(feature="tenure", test="ks", statistic=0.3, p_value=1e-6, threshold=0.05, drifted=True)],
        drifted_share=0.2,
        dataset_drift=False,
        severity=severity,  # type: ignore[arg-type]
    )


async def raised_on_topic(settings: Settings, model: str) -> list[tuple[AlertRaised, float]]:
    found = []
    for record in await read_all(settings, topics.ALERTS):
        event = decode(record.value, list(record.headers)).event
        if isinstance(event, AlertRaised) and event.model == model:
            found.append((event, record.timestamp / 1000))
    return found


async def test_a_drift_reaches_the_alerts_topic_and_a_signed_webhook_once(
    settings: Settings, alerter_of: Any, hook: Hook
) -> None:
    hook.start()
    alerter: AlerterService = await alerter_of(config_text(hook))
    model = f"churn-{uuid.uuid4().hex[:6]}"
    sent_at = time.time()
    [event_id] = await publish(settings, drift(model))

    async def on_topic() -> bool:
        return len(await raised_on_topic(settings, model)) == 1

    await eventually(on_topic, timeout=30, what="AlertRaised on the alerts topic")
    await eventually(lambda: _true(len(hook.received) == 1), timeout=30, what="the webhook")
    [(raised, raised_at)] = await raised_on_topic(settings, model)
    assert raised.labels["kind"] == "drift" and raised.labels["model"] == model and raised.labels["version"] == "1"
    assert raised.source_event_type == "DriftDetected" and raised.source_event_id == event_id
    assert raised.annotations["summary"] == f"{model} v1: drift in tenure (1000 rows)"

    [(headers, body, hooked_at)] = hook.received
    assert verify(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert not verify(SECRET, headers[TIMESTAMP_HEADER], body + b" ", headers[SIGNATURE_HEADER])
    payload = json.loads(body)
    assert payload["text"].startswith(f"[FIRING:1] model={model} kind=drift")
    assert [a["fingerprint"] for a in payload["modelbus"]["alerts"]] == [raised.fingerprint]
    assert headers[NOTIFICATION_HEADER] == payload["modelbus"]["notification_id"]

    async with alerter.sessions() as session:
        alert = await session.get(alerter_store.AlertRow, (settings.topic_prefix, raised.fingerprint))
        [sent] = (
            await session.scalars(
                select(alerter_store.NotificationRow).where(
                    alerter_store.NotificationRow.id == payload["modelbus"]["notification_id"]
                )
            )
        ).all()
    assert alert is not None and alert.status == "firing" and sent.status == "sent" and sent.attempts == 1
    timings = {
        "event -> alert recorded": (alert.starts_at.timestamp() - sent_at),
        "alert -> notification written": (sent.created_at - alert.starts_at).total_seconds(),
        "notification -> AlertRaised on the topic": raised_at - sent.created_at.timestamp(),
        "notification -> webhook received": hooked_at - sent.created_at.timestamp(),
    }
    print("\none alert's path:", json.dumps({k: round(v, 3) for k, v in timings.items()}))
    # group_wait (0.2 s) holds the first notification back, then it goes within a few ticks.
    assert timings["alert -> notification written"] >= 0.2

    # A promotion of a newer version resolves it: one more notification, "resolved".
    await publish(
        settings,
        RolloutChanged(
            model=model,
            rollout_id="ro-1",
            candidate_version=2,
            stable_version=1,
            from_state="canary",
            to_state="promoted",
            step=3,
            traffic=[TrafficShare(version=2, percent=100, role="stable")],
            reason="every step passed",
        ),
    )
    await eventually(lambda: _true(len(hook.received) == 2), timeout=30, what="the resolved notification")
    resolved = hook.notifications()[1]["modelbus"]
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["resolved_reason"] == "version 2 was promoted"


async def _true(value: bool) -> bool:
    return value


async def test_a_thousand_drift_events_in_a_minute_notify_at_most_once_per_group_interval(
    settings: Settings, alerter_of: Any, hook: Hook
) -> None:
    hook.start()
    alerter: AlerterService = await alerter_of(config_text(hook, group_wait="0.5s", group_interval="3s"))
    model = f"churn-{uuid.uuid4().hex[:6]}"
    # 1,000 events over about 10 s: 40 versions x 2 severities make 80 distinct alerts, new ones
    # coming all along (a version every 25 events), the rest repeats.
    events = [drift(model, version=1 + i // 25, severity=("warning", "critical")[i % 2]) for i in range(1000)]
    bus = Bus(settings.model_copy(update={"service_name": "it-producer"}))
    await bus.start()
    try:
        await bus.publish(events[0])

        async def consuming() -> bool:
            async with alerter.sessions() as session:
                found = await session.scalars(
                    select(alerter_store.AlertRow).where(alerter_store.AlertRow.model == model)
                )
                return found.first() is not None

        await eventually(consuming, timeout=30, what="the alerter consuming")
        for start in range(1, 1000, 100):
            await asyncio.gather(*(bus.publish(e) for e in events[start : start + 100]))
            await asyncio.sleep(1)
    finally:
        await bus.stop()

    def carried() -> set[str]:
        return {a["fingerprint"] for n in hook.notifications() for a in n["modelbus"]["alerts"]}

    await eventually(lambda: _true(len(carried()) == 80), timeout=60, what="all 80 alerts notified")
    await asyncio.sleep(4)  # one more group_interval: nothing else may come
    times = [at for _, _, at in hook.received]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print(f"\n1,000 drift events -> {len(times)} notifications, {[round(g, 2) for g in gaps]} s apart")
    assert len(times) <= 1 + (times[-1] - times[0]) / 3 + 1
    # A flush is due a group_interval after the previous one was due (as Alertmanager's): one sent
    # late (a busy machine) is followed by a shorter gap, never by two within one interval.
    assert all(gap >= 2.5 for gap in gaps), f"notifications closer than group_interval: {gaps}"
    assert (times[-1] - times[0]) / len(gaps) >= 2.9, f"more than one notification per group_interval: {gaps}"
    assert 2 <= len(times) <= 6, f"{len(times)} notifications for 1,000 events"
    last = hook.notifications()[-1]["modelbus"]["alerts"]
    assert len(last) == 80, "each notification carries the whole group"
    assert max(a["times_raised"] for a in last) > 1


async def test_a_receiver_down_for_30_s_gets_the_notification_once_when_back(
    settings: Settings, alerter_of: Any, hook: Hook
) -> None:
    alerter: AlerterService = await alerter_of(config_text(hook), alerter_retry_max_seconds=4)
    model = f"churn-{uuid.uuid4().hex[:6]}"
    await publish(settings, drift(model))

    async def failing() -> bool:
        async with alerter.sessions() as session:
            rows = (await session.scalars(select(alerter_store.NotificationRow))).all()
            return any(r.status == "pending" and r.attempts >= 2 and model in json.dumps(r.payload) for r in rows)

    await eventually(failing, timeout=30, what="delivery attempts failing while the webhook is down")
    down_since = time.time()
    await asyncio.sleep(max(0.0, 30 - (time.time() - down_since)))
    hook.start()
    await eventually(
        lambda: _true(len(hook.received) >= 1), timeout=30, what="the notification once the webhook is back"
    )
    await asyncio.sleep(3)
    assert len(hook.received) == 1
    async with alerter.sessions() as session:
        [row] = [
            r
            for r in (await session.scalars(select(alerter_store.NotificationRow))).all()
            if model in json.dumps(r.payload)
        ]
    assert row.status == "sent" and row.attempts >= 4 and row.last_error is None


async def test_an_alerter_killed_before_notifying_notifies_exactly_once_after_restart(
    settings: Settings, hook: Hook, tmp_path: Path
) -> None:
    hook.start()
    config = tmp_path / "alerter.yaml"
    config.write_text(config_text(hook, group_wait="4s"))
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_ALERTER_CONFIG": str(config),
        "MODELBUS_ALERTER_PORT": str(free_port()),
        "MODELBUS_ALERTER_TICK_SECONDS": "0.2",
        "MODELBUS_OTLP_ENDPOINT": "",
        SECRET_ENV: SECRET,
    }
    logs = tmp_path / "alerter.log"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "services.alerter"],
            cwd=ROOT,
            env=env,
            stderr=logs.open("ab"),
            stdout=subprocess.DEVNULL,
        )

    model = f"churn-{uuid.uuid4().hex[:6]}"
    process = start()
    try:
        await publish(settings, drift(model))
        engine_settings = settings
        from shared.runtime.db import make_engine, make_sessions

        engine = make_engine(engine_settings)
        sessions = make_sessions(engine)

        async def received() -> bool:
            async with sessions() as session:
                rows = await session.scalars(
                    select(alerter_store.AlertRow).where(alerter_store.AlertRow.model == model)
                )
                return rows.first() is not None

        await eventually(received, timeout=60, what="the alert recorded")
        process.send_signal(signal.SIGKILL)  # inside group_wait: nothing notified yet
        process.wait(timeout=10)
        assert hook.received == []
        process = start()
        await eventually(lambda: _true(len(hook.received) >= 1), timeout=60, what="the notification after the restart")
        await asyncio.sleep(3)
        notified = [a["labels"]["model"] for n in hook.notifications() for a in n["modelbus"]["alerts"]]
        assert notified == [model], logs.read_text()[-2000:]
        await engine.dispose()
    finally:
        process.terminate()
        process.wait(timeout=20)


async def test_silences_and_acks_through_the_api_are_audited_and_mute_notifications(
    settings: Settings, alerter_of: Any, hook: Hook
) -> None:
    hook.start()
    tokens = SecretStr("op-token=operator:olga,view-token=viewer:vic")
    alerter: AlerterService = await alerter_of(config_text(hook), api_tokens=tokens)
    model = f"churn-{uuid.uuid4().hex[:6]}"
    transport = httpx.ASGITransport(app=alerter.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://alerter") as http:
        operator = {"Authorization": "Bearer op-token"}
        viewer = {"Authorization": "Bearer view-token"}
        refused = await http.post("/v1/silences", json={"matchers": ["model=x"], "duration": "1h", "comment": "x"})
        assert refused.status_code == 401
        bad = await http.post(
            "/v1/silences", headers=operator, json={"matchers": ['kind=~"(drift"'], "duration": "1h", "comment": "x"}
        )
        assert bad.status_code == 422 and "not a regular expression RE2 accepts" in bad.text
        made = await http.post(
            "/v1/silences",
            headers=operator,
            json={"matchers": [f'model="{model}"', 'kind="drift"'], "duration": "2h", "comment": "known shift"},
        )
        assert made.status_code == 201, made.text
        silence = made.json()
        assert silence["state"] == "active" and silence["created_by"] == "olga"

        await publish(settings, drift(model))

        async def listed() -> list[dict[str, Any]]:
            return list((await http.get("/v1/alerts", headers=viewer, params={"model": model})).json())

        await eventually(lambda: _listed(listed), timeout=30, what="the alert listed")
        [alert] = await listed()
        assert alert["silenced_by"] == [silence["id"]]
        await asyncio.sleep(1.5)
        assert hook.received == [], "a silenced alert is not notified"

        assert (await http.post(f"/v1/alerts/{alert['fingerprint']}/ack", headers=viewer)).status_code == 403
        acked = await http.post(
            f"/v1/alerts/{alert['fingerprint']}/ack", headers=operator, json={"comment": "retraining"}
        )
        assert acked.json()["acked_by"] == "olga" and acked.json()["ack_comment"] == "retraining"

        expired = await http.delete(f"/v1/silences/{silence['id']}", headers=operator)
        assert expired.json()["state"] == "expired" and expired.json()["expired_by"] == "olga"
        await eventually(lambda: _true(len(hook.received) == 1), timeout=30, what="the notification once unsilenced")
        shown = (await http.get(f"/v1/alerts/{alert['fingerprint']}", headers=viewer)).json()
        assert [n["status"] for n in shown["notifications"]] == ["sent"]

    async with alerter.sessions() as session:
        audit = (
            await session.scalars(
                select(alerter_store.AuditRow).where(
                    alerter_store.AuditRow.target.in_([silence["id"], alert["fingerprint"]])
                )
            )
        ).all()
    assert sorted((a.actor, a.action) for a in audit) == [
        ("olga", "ack"),
        ("olga", "expire-silence"),
        ("olga", "silence"),
    ]


async def test_a_pending_silence_expires_at_once_and_silences_of_everything_or_bad_parameters_are_refused(
    settings: Settings, alerter_of: Any, hook: Hook
) -> None:
    tokens = SecretStr("op-token=operator:olga")
    alerter: AlerterService = await alerter_of(config_text(hook), api_tokens=tokens)
    operator = {"Authorization": "Bearer op-token"}
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=alerter.api), base_url="http://alerter") as http:
        made = await http.post(
            "/v1/silences", headers=operator,
            json={"matchers": ['model="later"'], "starts_at": later, "duration": "1h", "comment": "maintenance"},
        )  # fmt: skip
        assert made.status_code == 201 and made.json()["state"] == "pending", made.text
        expired = await http.delete(f"/v1/silences/{made.json()['id']}", headers=operator)
        assert expired.json()["state"] == "expired", "expiring a pending silence ends it (as Alertmanager does)"
        am = await http.get(f"/api/v2/silence/{made.json()['id']}", headers=operator)
        assert am.json()["status"]["state"] == "expired"

        everything = await http.post(
            "/v1/silences", headers=operator, json={"matchers": ['team=""'], "duration": "1h", "comment": "x"}
        )
        assert everything.status_code == 422 and "must not match the empty string" in everything.text
        posted = await http.post(
            "/api/v2/silences", headers=operator,
            json={"matchers": [{"name": "model", "value": ".*", "isRegex": True}], "startsAt": later,
                  "endsAt": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
                  "createdBy": "olga", "comment": "x"},
        )  # fmt: skip
        assert posted.status_code == 400 and "must not match the empty string" in posted.json()
        bad = await http.get("/api/v2/alerts", params={"active": "perhaps"}, headers=operator)
        assert bad.status_code == 400 and isinstance(bad.json(), str) and "active" in bad.json(), bad.text
        refused = await http.get("/api/v2/alerts", params={"filter": r"model=~(a)\1"}, headers=operator)
        assert refused.status_code == 400 and "RE2" in refused.json()


async def _listed(found: Any) -> bool:
    return len(await found()) == 1


@pytest.fixture
def sns_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's standalone server on 127.0.0.1: an SNS (and SQS) endpoint."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "moto.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"moto_server did not start: {(tmp_path / 'moto.log').read_text()[-1000:]}")
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=10)


async def test_a_performance_alert_goes_to_sns(
    settings: Settings, alerter_of: Any, hook: Hook, sns_endpoint: str
) -> None:
    sns = boto3.client("sns", region_name="us-east-1", endpoint_url=sns_endpoint)
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=sns_endpoint)
    topic_arn = sns.create_topic(Name="modelbus-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="ops")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    extra = f"""  - name: pager
    sns: {{topic_arn: "{topic_arn}", region: us-east-1, endpoint_url: "{sns_endpoint}"}}
"""
    text = (
        config_text(hook, extra=extra)
        .replace("receiver: payments", "receiver: pager")
        .replace('team="payments"', 'kind="performance"')
    )
    await alerter_of(text)
    model = f"churn-{uuid.uuid4().hex[:6]}"
    await publish(
        settings,
        PerformanceDegraded(
            model=model,
            version=2,
            window_id="perf-1",
            metric="accuracy",
            value=0.61,
            baseline=0.84,
            threshold=0.79,
            labelled_rows=500,
            severity="critical",
        ),
    )
    messages: list[dict[str, Any]] = []

    async def delivered() -> bool:
        got = await asyncio.to_thread(sqs.receive_message, QueueUrl=queue_url, WaitTimeSeconds=1)
        messages.extend(got.get("Messages", []))
        return bool(messages)

    await eventually(delivered, timeout=30, what="the SNS message in the subscribed queue")
    envelope = json.loads(messages[0]["Body"])
    payload = json.loads(envelope["Message"])
    assert envelope["Subject"].startswith(f"[FIRING:1] model={model} kind=performance")
    [alert] = payload["modelbus"]["alerts"]
    assert alert["labels"]["kind"] == "performance" and alert["severity"] == "critical"
    assert "live accuracy 0.6100 against 0.8400" in alert["annotations"]["summary"]
    assert hook.received == [], "the performance route does not continue to ops"


async def test_a_route_sends_a_teams_alerts_to_its_own_topic_with_the_specs_labels(
    settings: Settings, alerter_of: Any, hook: Hook
) -> None:
    hook.start()
    text = config_text(hook, payments_topic="alerts.payments")
    await alerter_of(text)
    model = f"pay-{uuid.uuid4().hex[:6]}"
    example = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())
    spec = example.model_copy(
        update={"model": model, "alerts": Alerts(team="payments", severity="critical", labels={"tier": "gold"})}
    )
    await publish(
        settings,
        ModelSpecApplied(model=model, revision=1, spec=spec, spec_yaml="-", spec_sha256="0" * 64, applied_by="it"),
    )
    await asyncio.sleep(1)  # the spec first: its labels name the team
    await publish(settings, drift(model))

    async def on_team_topic() -> list[AlertRaised]:
        found = [
            decode(r.value, list(r.headers)).event for r in await read_all(settings, settings.topic("alerts.payments"))
        ]
        return [e for e in found if isinstance(e, AlertRaised) and e.model == model]

    await eventually(lambda: _listed_one(on_team_topic), timeout=30, what="AlertRaised on <prefix>.alerts.payments")
    [raised] = await on_team_topic()
    assert raised.labels["team"] == "payments" and raised.labels["tier"] == "gold"
    assert await raised_on_topic(settings, model) == [], "the payments route does not continue"
    assert hook.received == []
    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        await admin.delete_topics([settings.topic("alerts.payments")])
    finally:
        await admin.close()


async def _listed_one(found: Any) -> bool:
    return len(await found()) == 1
