"""CloudEvents 1.0 binary mode over Kafka: `ce_*` headers around a JSON event body."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import ValidationError

from shared.contract.events import BY_TYPE, Event

SPEC_VERSION = "1.0"
TYPE_PREFIX = "io.modelbus."
CONTENT_TYPE = "application/json"
REQUIRED_HEADERS = ("ce_id", "ce_source", "ce_type", "ce_specversion")
Headers = list[tuple[str, bytes]]
FailureKind = Literal["parse", "validation", "unknown-type"]


def ce_type(event_cls: type[Event]) -> str:
    """The CloudEvents type of an event class, e.g. io.modelbus.DataArrived."""
    return TYPE_PREFIX + event_cls.event_type


class EnvelopeError(ValueError):
    """A message that is not a valid modelbus event; `reason` names what is wrong."""

    def __init__(self, kind: FailureKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message: its CloudEvents attributes, trace context and typed event."""

    id: str
    source: str
    type: str
    time: datetime | None
    event: Event
    traceparent: str | None = None
    tracestate: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An encoded message ready for Kafka."""

    event_id: str
    key: bytes
    value: bytes
    headers: Headers


def encode(
    event: Event,
    *,
    source: str,
    event_id: str | None = None,
    time: datetime | None = None,
    trace_headers: dict[str, str] | None = None,
) -> Outgoing:
    """Encode an event as key, JSON body and CloudEvents binary-mode headers."""
    event_id = event_id or str(uuid.uuid4())
    stamp = (time or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    headers: Headers = [
        ("ce_id", event_id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", ce_type(type(event)).encode()),
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_time", stamp.encode()),
        ("ce_subject", event.key().encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]
    headers += [(name, value.encode()) for name, value in (trace_headers or {}).items()]
    return Outgoing(event_id, event.key().encode(), event.model_dump_json().encode(), headers)


def describe_validation_error(error: ValidationError) -> str:
    """One readable line per bad field, e.g. "field 'sha256': Field required"."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(body)"
        parts.append(f"field '{where}': {item['msg']}")
    return "; ".join(parts)


def decode(
    value: bytes | None,
    headers: Headers | dict[str, bytes],
    *,
    allowed: frozenset[str] | None = None,
    max_bytes: int = 1_048_576,
) -> Envelope:
    """Decode a Kafka message into an Envelope, or raise EnvelopeError naming what is wrong."""
    raw = dict(headers) if not isinstance(headers, dict) else headers
    text: dict[str, str] = {}
    for name, data in raw.items():
        try:
            text[name.lower()] = data.decode() if isinstance(data, bytes) else str(data)
        except UnicodeDecodeError:
            raise EnvelopeError("parse", f"header '{name}' is not UTF-8") from None
    missing = [name for name in REQUIRED_HEADERS if not text.get(name)]
    if missing:
        raise EnvelopeError("parse", f"missing CloudEvents header(s): {', '.join(missing)}")
    if text["ce_specversion"] != SPEC_VERSION:
        raise EnvelopeError("parse", f"header 'ce_specversion' is {text['ce_specversion']!r}; only 1.0 is read")
    content_type = text.get("content-type", CONTENT_TYPE)
    if content_type.split(";")[0].strip() != CONTENT_TYPE:
        raise EnvelopeError("parse", f"header 'content-type' is {content_type!r}; expected {CONTENT_TYPE}")
    type_name = text["ce_type"]
    cls = BY_TYPE.get(type_name.removeprefix(TYPE_PREFIX)) if type_name.startswith(TYPE_PREFIX) else None
    if cls is None:
        raise EnvelopeError("unknown-type", f"header 'ce_type' names an unknown event type {type_name!r}")
    if allowed is not None and cls.event_type not in allowed:
        raise EnvelopeError(
            "unknown-type",
            f"event type {cls.event_type} does not belong on this topic (expected {', '.join(sorted(allowed))})",
        )
    if value is None:
        raise EnvelopeError("parse", "message has no body")
    if len(value) > max_bytes:
        raise EnvelopeError("parse", f"body is {len(value)} bytes; the limit is {max_bytes}")
    try:
        # The fast way: parse and validate in one pass; on any error, the careful way below says why.
        event = cls.model_validate_json(value)
    except ValidationError:
        pass
    else:
        return _envelope(text, cls, event)
    try:
        body = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise EnvelopeError("parse", f"body is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise EnvelopeError("parse", f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(body, dict):
        raise EnvelopeError("parse", f"body must be a JSON object, not {type(body).__name__}")
    try:
        event = cls.model_validate(body)
    except ValidationError as exc:
        raise EnvelopeError("validation", f"{cls.event_type}: {describe_validation_error(exc)}") from None
    return _envelope(text, cls, event)


def _envelope(text: dict[str, str], cls: type[Event], event: Event) -> Envelope:
    time = None
    if text.get("ce_time"):
        try:
            time = datetime.fromisoformat(text["ce_time"].replace("Z", "+00:00"))
        except ValueError:
            raise EnvelopeError("parse", f"header 'ce_time' is not RFC 3339: {text['ce_time']!r}") from None
    extra = {k: v for k, v in text.items() if k not in {*REQUIRED_HEADERS, "ce_time", "traceparent", "tracestate"}}
    return Envelope(
        id=text["ce_id"],
        source=text["ce_source"],
        type=cls.event_type,
        time=time,
        event=event,
        traceparent=text.get("traceparent"),
        tracestate=text.get("tracestate"),
        extra=extra,
    )
