"""PagerDuty's Events API v2 (https://events.pagerduty.com/v2/enqueue): each alert of a
notification is one event. A firing alert is a `trigger` whose `dedup_key` is its fingerprint
(so a repeat updates the same PagerDuty alert), with its summary, severity, source, component,
group, class, custom details (labels and evidence) and links (console page, trace, lineage); a
resolved one is a `resolve` of that key. 429 and 5xx are tried again after `Retry-After`."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from typing import Any

import httpx

from services.alerter.config import PagerDutyReceiver
from shared.runtime.settings import secret_variable

SEVERITIES = {"critical": "critical", "warning": "warning", "info": "info"}  # anything else: error
LINKS = (("console", "modelbus console"), ("trace", "lifecycle trace"), ("lineage", "lineage (registry API)"))
LONGEST_WAIT = 30.0


class PagerDutyError(Exception):
    """PagerDuty did not take an event; the message says why."""


def events(payload: dict[str, Any], routing_key: str, client_url: str) -> list[dict[str, Any]]:
    """The Events v2 bodies of a notification, one per alert."""
    found = []
    for alert in payload["modelbus"]["alerts"]:
        if alert["status"] == "resolved":
            found.append({"routing_key": routing_key, "event_action": "resolve", "dedup_key": alert["fingerprint"]})
            continue
        labels, notes = alert["labels"], alert["annotations"]
        try:
            evidence = json.loads(notes.get("evidence", "{}"))
        except ValueError:
            evidence = notes.get("evidence")
        body = {
            "summary": notes.get("summary", alert["fingerprint"])[:1024],
            "source": f"modelbus/{labels.get('model', '-')}" + (f"@{labels['version']}" if "version" in labels else ""),
            "severity": SEVERITIES.get(alert.get("severity", ""), "error"),
            "timestamp": alert["starts_at"],
            "component": labels.get("model", "-"),
            "group": labels.get("team", "ml"),
            "class": labels.get("alertname", labels.get("kind", "alert")),
            "custom_details": {"labels": labels, "evidence": evidence, "times_raised": alert.get("times_raised", 1)},
        }
        links = [{"href": notes[key], "text": text} for key, text in LINKS if notes.get(key)]
        event = {
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": alert["fingerprint"],
            "payload": body,
            "links": links,
            "client": "modelbus",
            "client_url": client_url,
        }
        found.append(event)
    return found


def retry_after(value: str | None, attempt: int) -> float:
    """How long to wait before the next try: Retry-After (seconds or an HTTP date), else doubling."""
    if value:
        if value.strip().isdigit():
            return min(float(value), LONGEST_WAIT)
        when = email.utils.parsedate_to_datetime(value) if "," in value else None
        if when is not None:
            return min(max(when.timestamp() - time.time(), 0.0), LONGEST_WAIT)
    return min(2.0**attempt, LONGEST_WAIT)


async def send(http: httpx.AsyncClient, target: PagerDutyReceiver, payload: dict[str, Any], client_url: str) -> None:
    """Send every event of a notification; PagerDutyError if one is not taken after its tries."""
    key = secret_variable(target.routing_key_env)
    if not key:
        raise PagerDutyError(f"the routing key variable {target.routing_key_env} is not set")
    for event in events(payload, key, client_url):
        for attempt in range(target.attempts):
            response = await http.post(target.url, json=event, timeout=target.timeout)
            if response.status_code == 202:
                break
            if response.status_code == 429 or response.status_code >= 500:
                if attempt + 1 < target.attempts:
                    await asyncio.sleep(retry_after(response.headers.get("Retry-After"), attempt))
                    continue
            raise PagerDutyError(
                f"{event['event_action']} of {event['dedup_key'][:12]}: {response.status_code} {response.text[:200]}"
            )
