"""modelbus' alerts and silences in Alertmanager's shapes. `alertmanager` is its webhook payload,
version 4 (what its `webhook_configs` POST): the receivers on-call teams already run take it as is.
The rest are the shapes of its API v2 (gettableAlert, gettableSilence, matchers), which the
alerter answers at /api/v2 for amtool, Karma and Grafana's Alertmanager data source. Pure.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.alerter.config import Matcher

GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing


def rfc3339(text: str | None) -> str:
    """An ISO time as Alertmanager writes it (UTC, `Z`); Go's zero time for none."""
    if not text:
        return GO_ZERO_TIME
    return datetime.fromisoformat(text).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    """The pairs every map has, with the same value (Alertmanager's commonLabels / commonAnnotations)."""
    if not maps:
        return {}
    first, *rest = maps
    return {k: v for k, v in sorted(first.items()) if all(m.get(k) == v for m in rest)}


def group_key(group_labels: dict[str, str]) -> str:
    """A group's key in Alertmanager's shape: `{route}:{label="value",...}`."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(group_labels.items()))
    return "{}:{" + inner + "}"


def alertmanager(payload: dict[str, Any], *, external_url: str, max_alerts: int = 0) -> dict[str, Any]:
    """A notification (services.alerter.domain.payload) as Alertmanager's webhook body, version 4.
    With `max_alerts`, only the first that many alerts are sent and `truncatedAlerts` counts the
    rest, as Alertmanager does; the status and the common labels are those of the whole group."""
    notification = payload["modelbus"]
    members = notification["alerts"]
    alerts = [
        {
            "status": member["status"],
            "labels": member["labels"],
            "annotations": member["annotations"],
            "startsAt": rfc3339(member["starts_at"]),
            "endsAt": rfc3339(member["ends_at"]) if member["status"] == "resolved" else GO_ZERO_TIME,
            "generatorURL": member["annotations"].get("console") or member["annotations"].get("lineage", ""),
            "fingerprint": member["fingerprint"],
        }
        for member in members
    ]
    kept = alerts[:max_alerts] if max_alerts > 0 else alerts
    return {
        "version": "4",
        "groupKey": group_key(notification["group_labels"]),
        "truncatedAlerts": len(alerts) - len(kept),
        "status": notification["status"],
        "receiver": notification["receiver"],
        "groupLabels": notification["group_labels"],
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "alerts": kept,
    }


# ---------------------------------------------------------------- Alertmanager's API v2 shapes


def am_matcher(text: str) -> dict[str, Any]:
    """A matcher (`team="payments"`) as Alertmanager's API writes it."""
    matcher = Matcher.parse(text)
    return {
        "name": matcher.label,
        "value": matcher.value,
        "isRegex": matcher.op in ("=~", "!~"),
        "isEqual": matcher.op in ("=", "=~"),
    }


def from_am_matcher(name: str, value: str, *, is_regex: bool, is_equal: bool) -> str:
    """An Alertmanager API matcher as modelbus writes it (checked: a bad regex raises ValueError)."""
    op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}[(is_regex, is_equal)]
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return str(Matcher.parse(f'{name}{op}"{escaped}"'))


def silence_state(starts_at: datetime, ends_at: datetime, now: datetime) -> str:
    """pending, active or expired."""
    if now < starts_at:
        return "pending"
    return "active" if now < ends_at else "expired"


def gettable_silence(silence: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A silence (services.alerter.records.SilenceRecord.as_dict) as Alertmanager's gettableSilence."""
    starts, ends = datetime.fromisoformat(silence["starts_at"]), datetime.fromisoformat(silence["ends_at"])
    return {
        "id": silence["id"],
        "status": {"state": silence_state(starts, ends, now)},
        "updatedAt": rfc3339(silence["created_at"]),
        "matchers": [am_matcher(m) for m in silence["matchers"]],
        "startsAt": rfc3339(silence["starts_at"]),
        "endsAt": rfc3339(silence["ends_at"]),
        "createdBy": silence["created_by"],
        "comment": silence["comment"],
    }


def silence_matches_filter(matchers: list[str], wanted: list[Matcher]) -> bool:
    """Alertmanager's silence filter: each wanted matcher matches the value the silence gives
    its label (a silence without the label passes an empty wanted value)."""
    values = {m.label: m.value for m in map(Matcher.parse, matchers)}
    for want in wanted:
        present = want.label in values
        negative = want.op in ("!=", "!~")
        if want.value == "" and present == negative:
            continue
        if not want.matches(values):
            return False
    return True


def gettable_alert(
    alert: dict[str, Any],
    *,
    receivers: list[str],
    silenced_by: list[str],
    inhibited_by: list[str],
    ends_at: datetime,
) -> dict[str, Any]:
    """A firing alert (services.alerter.records.AlertRecord.as_dict) as Alertmanager's gettableAlert."""
    annotations = {k: v for k, v in alert["annotations"].items() if isinstance(v, str)}
    gettable: dict[str, Any] = {
        "labels": alert["labels"],
        "annotations": annotations,
        "receivers": [{"name": name} for name in receivers],
        "fingerprint": alert["fingerprint"],
        "startsAt": rfc3339(alert["starts_at"]),
        "updatedAt": rfc3339(alert["updated_at"]),
        "endsAt": rfc3339(ends_at.isoformat()),
        "status": {
            "state": "suppressed" if silenced_by or inhibited_by else "active",
            "silencedBy": silenced_by,
            "inhibitedBy": inhibited_by,
        },
    }
    generator = annotations.get("console") or annotations.get("lineage")
    if generator:  # optional, and a URI when given (never "")
        gettable["generatorURL"] = generator
    return gettable
