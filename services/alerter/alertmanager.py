"""Forwarding to a running Alertmanager: a notification's alerts as `POST /api/v2/alerts`
bodies (Alertmanager's postableAlerts), the way Prometheus sends them.

A firing alert's `endsAt` lies four resend intervals ahead: the alerter sends it again every
interval while it fires (its route repeats that often), so Alertmanager keeps it open, and lets it
lapse by itself if the alerter stops. A resolved alert carries the time it ended, which
Alertmanager takes as its resolution.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from services.alerter.config import AlertmanagerReceiver
from services.alerter.formats import rfc3339
from shared.runtime.settings import secret_variable

LAPSE_INTERVALS = 4  # as Prometheus: an alert not sent again for four intervals ends by itself


class AlertmanagerError(Exception):
    """Alertmanager did not take the alerts; the message says why."""


def postable(payload: dict[str, Any], now: datetime, resend_interval: float) -> list[dict[str, Any]]:
    """The postableAlerts of a notification (services.alerter.domain.payload)."""
    lapse = now + timedelta(seconds=LAPSE_INTERVALS * resend_interval)
    found = []
    for alert in payload["modelbus"]["alerts"]:
        ends = alert["ends_at"] if alert["status"] == "resolved" and alert["ends_at"] else lapse.isoformat()
        annotations = {k: v for k, v in alert["annotations"].items() if isinstance(v, str)}
        postable = {
            "labels": alert["labels"],
            "annotations": annotations,
            "startsAt": rfc3339(alert["starts_at"]),
            "endsAt": rfc3339(ends),
        }
        generator = annotations.get("console") or annotations.get("lineage")
        if generator:  # optional, and a URI when given (never "")
            postable["generatorURL"] = generator
        found.append(postable)
    return found


async def send(http: httpx.AsyncClient, target: AlertmanagerReceiver, payload: dict[str, Any], now: datetime) -> None:
    """Post a notification's alerts; AlertmanagerError unless Alertmanager answers 200."""
    headers = {}
    if target.bearer_token_env:
        headers["Authorization"] = f"Bearer {secret_variable(target.bearer_token_env) or ''}"
    url = f"{target.url.rstrip('/')}/api/v2/alerts"
    try:
        response = await http.post(
            url, json=postable(payload, now, target.resend_interval), headers=headers, timeout=target.timeout
        )
    except httpx.HTTPError as exc:
        raise AlertmanagerError(f"{url}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise AlertmanagerError(f"{url} answered {response.status_code}: {response.text[:200]}")
