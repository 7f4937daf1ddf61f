"""Where notifications go: Kafka topics, signed webhooks (modelbus' or Alertmanager's body), AWS
SNS, PagerDuty (services.alerter.pagerduty), a running Alertmanager (services.alerter.alertmanager),
e-mail (services.alerter.mail), the log.

A delivery either succeeds or raises; the notification log retries what raised.

Webhook signature: `X-Modelbus-Signature: v1=<hex>`, the HMAC-SHA256, keyed with the receiver's
secret, of `<X-Modelbus-Timestamp>.<body>`. A receiver recomputes it over the raw body and the
timestamp header, compares in constant time, and refuses old timestamps (replays).
`X-Modelbus-Notification` is the notification's id: the same id twice is the same notification.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx

from services.alerter import alertmanager, formats, mail, pagerduty
from services.alerter.config import AlerterConfig, KafkaReceiver, Receiver, SnsReceiver, WebhookReceiver
from shared.contract.envelope import encode
from shared.contract.events import AlertRaised, AlertResolved, Event
from shared.runtime.bus import Bus
from shared.runtime.settings import secret_variable

log = logging.getLogger("modelbus.alerter.receivers")
SIGNATURE_HEADER = "X-Modelbus-Signature"
TIMESTAMP_HEADER = "X-Modelbus-Timestamp"
NOTIFICATION_HEADER = "X-Modelbus-Notification"


class DeliveryError(Exception):
    """A receiver did not take a notification; the message says which and why."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for a body sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, max_age: float = 300.0) -> bool:
    """Whether a received webhook is genuine and recent (what a receiver of ours would run)."""
    try:
        fresh = abs(time.time() - float(timestamp)) <= max_age
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def events_of(payload: dict[str, Any]) -> list[Event]:
    """The AlertRaised / AlertResolved events of a notification, one per alert."""
    found: list[Event] = []
    for alert in payload["modelbus"]["alerts"]:
        labels = alert["labels"]
        common = {
            "model": labels.get("model", "-"),
            "fingerprint": alert["fingerprint"],
            "labels": labels,
            "starts_at": datetime.fromisoformat(alert["starts_at"]),
        }
        if alert["status"] == "firing":
            found.append(
                AlertRaised(
                    **common,
                    annotations=alert["annotations"],
                    severity=alert["severity"],
                    source_event_type=alert["source_event_type"],
                    source_event_id=alert["source_event_id"],
                )
            )
        else:
            found.append(
                AlertResolved(
                    **common,
                    ends_at=datetime.fromisoformat(alert["ends_at"]),
                    reason=alert["resolved_reason"] or "resolved",
                )
            )
    return found


class Receivers:
    """Delivers a notification to every destination of its receiver."""

    def __init__(self, config: AlerterConfig, bus: Bus) -> None:
        self.config = config
        self.bus = bus
        self.http = httpx.AsyncClient(follow_redirects=False)
        self._sns: dict[tuple[str, str | None], Any] = {}
        self.alerts_page = f"{bus.settings.console_url.rstrip('/')}/alerts"

    async def close(self) -> None:
        await self.http.aclose()

    async def deliver(self, receiver_name: str, notification_id: str, payload: dict[str, Any]) -> None:
        """Send to every destination; raises DeliveryError naming those that failed.

        Destinations that took it are not asked again on a retry only if they dedupe: Kafka
        events and webhooks carry the notification id for that.
        """
        try:
            receiver: Receiver = self.config.receiver(receiver_name)
        except StopIteration:
            raise DeliveryError(f"no receiver is called {receiver_name!r} in this alerter's configuration") from None
        failures = []
        steps: list[tuple[str, Any]] = []
        for name, send in DESTINATIONS.items():
            target = getattr(receiver, name)
            if target is not None:
                steps.append((name, send(self, target, notification_id, payload)))
        for name, step in steps:
            try:
                await step
            except Exception as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
        if receiver.log:
            log.warning("notification %s to %s: %s", notification_id, receiver_name, payload["text"])
        if failures:
            raise DeliveryError(f"receiver {receiver_name}: " + "; ".join(failures))

    async def _kafka(self, target: KafkaReceiver, notification_id: str, payload: dict[str, Any]) -> None:
        topic = self.bus.settings.topic(target.topic)
        sends = []
        for event in events_of(payload):
            # The same notification sent again carries the same ce_ids: consumers drop the repeat.
            event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{notification_id}/{event.fingerprint}"))  # type: ignore[attr-defined]
            message = encode(event, source=self.bus.source, event_id=event_id)
            sends.append(self.bus.publish_raw(topic, message.key, message.value, message.headers))
        await asyncio.wait_for(asyncio.gather(*sends), timeout=15)

    async def _webhook(self, target: WebhookReceiver, notification_id: str, payload: dict[str, Any]) -> None:
        if target.format == "alertmanager":
            payload = formats.alertmanager(payload, external_url=self.alerts_page, max_alerts=target.max_alerts)
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            NOTIFICATION_HEADER: notification_id,
            TIMESTAMP_HEADER: timestamp,
        }
        if target.secret_env:
            headers[SIGNATURE_HEADER] = sign(secret_variable(target.secret_env) or "", timestamp, body)
        response = await self.http.post(target.url, content=body, headers=headers, timeout=target.timeout)
        if response.status_code >= 300:
            raise DeliveryError(f"{target.url} answered {response.status_code}: {response.text[:200]}")

    async def _sns_publish(self, target: SnsReceiver, notification_id: str, payload: dict[str, Any]) -> None:
        key = (target.region, target.endpoint_url)
        if key not in self._sns:
            self._sns[key] = boto3.client("sns", region_name=target.region, endpoint_url=target.endpoint_url)
        client = self._sns[key]
        subject = payload["text"].splitlines()[0][:100]
        message = json.dumps(payload, default=str)
        attributes = {
            "notification_id": {"DataType": "String", "StringValue": notification_id},
            "status": {"DataType": "String", "StringValue": payload["modelbus"]["status"]},
        }
        await asyncio.to_thread(
            client.publish, TopicArn=target.topic_arn, Subject=subject, Message=message, MessageAttributes=attributes
        )


# Each kind of destination registers itself under the name of its field in a receiver's
# configuration (as Evidently's `register_stattest`): a coroutine function of the receivers, the
# destination's settings, the notification id and the payload. A notification goes to them in
# this order.
Destination = Callable[[Receivers, Any, str, dict[str, Any]], Awaitable[None]]
DESTINATIONS: dict[str, Destination] = {}


def destination(name: str) -> Callable[[Destination], Destination]:
    """Register how a notification goes to the destinations configured as `name`."""

    def register(send: Destination) -> Destination:
        DESTINATIONS[name] = send
        return send

    return register


@destination("kafka")
async def _to_kafka(receivers: Receivers, target: KafkaReceiver, notification_id: str, payload: dict[str, Any]) -> None:
    await receivers._kafka(target, notification_id, payload)


@destination("webhook")
async def _to_webhook(
    receivers: Receivers, target: WebhookReceiver, notification_id: str, payload: dict[str, Any]
) -> None:
    await receivers._webhook(target, notification_id, payload)


@destination("sns")
async def _to_sns(receivers: Receivers, target: SnsReceiver, notification_id: str, payload: dict[str, Any]) -> None:
    await receivers._sns_publish(target, notification_id, payload)


@destination("pagerduty")
async def _to_pagerduty(receivers: Receivers, target: Any, notification_id: str, payload: dict[str, Any]) -> None:
    await pagerduty.send(receivers.http, target, payload, receivers.alerts_page)


@destination("alertmanager")
async def _to_alertmanager(receivers: Receivers, target: Any, notification_id: str, payload: dict[str, Any]) -> None:
    await alertmanager.send(receivers.http, target, payload, datetime.now(UTC))


@destination("email")
async def _to_email(receivers: Receivers, target: Any, notification_id: str, payload: dict[str, Any]) -> None:
    await mail.send(target, notification_id, payload, receivers.alerts_page)
