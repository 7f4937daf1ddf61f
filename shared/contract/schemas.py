"""The JSON Schemas of the contract: one per event body, the Kafka envelope (CloudEvents headers),
streaming inference's two messages and the model spec format. `shared.ops.schemas` writes them,
with the AsyncAPI document, to `schemas/`; a test fails when the files are stale."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from shared.contract import topics
from shared.contract.envelope import CONTENT_TYPE, SPEC_VERSION, ce_type
from shared.contract.events import EVENT_TYPES, SCHEMA_VERSION, Event
from shared.contract.spec import spec_json_schema

DEFAULT_PREFIX = "modelbus"
SCHEMA_BASE = "https://modelbus.dev/schemas"


def kebab(name: str) -> str:
    """DataArrived -> data-arrived."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def event_schema(cls: type[Event]) -> dict[str, Any]:
    """JSON Schema of an event body, with where and how it travels."""
    schema = cls.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}/events/{kebab(cls.event_type)}.json",
        **schema,
        "x-modelbus": {
            "ce_type": ce_type(cls),
            "topic": f"{DEFAULT_PREFIX}.{cls.topic}",
            "key": cls.key_field,
            "schema_version": SCHEMA_VERSION,
        },
    }


def stream_schema(message: type[BaseModel]) -> dict[str, Any]:
    """JSON Schema of a streaming inference message (plain JSON, no CloudEvents headers), with the
    topic it travels on."""
    topic = f"{topics.INPUTS}.<model>" if message.__name__ == "FeatureRecords" else f"{topics.OUTPUTS}.<model>"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}/streams/{kebab(message.__name__)}.json",
        **message.model_json_schema(mode="validation"),
        "x-modelbus": {"topic": f"{DEFAULT_PREFIX}.{topic}", "key": "the entity (optional)"},
    }


def envelope_schema() -> dict[str, Any]:
    """The Kafka headers every modelbus message carries (CloudEvents 1.0 binary mode)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}/envelope.json",
        "title": "modelbus Kafka headers",
        "description": (
            "CloudEvents 1.0 binary mode: attributes travel as Kafka headers, the event JSON is the "
            "message value, the key is the model name (the dataset name for DataArrived)."
        ),
        "type": "object",
        "required": ["ce_id", "ce_source", "ce_type", "ce_specversion"],
        "properties": {
            "ce_id": {"type": "string", "minLength": 1, "description": "Unique event id (idempotency key)."},
            "ce_source": {"type": "string", "minLength": 1, "description": "Producer, e.g. /modelbus/trainer."},
            "ce_type": {"enum": [ce_type(cls) for cls in EVENT_TYPES], "description": "Event type."},
            "ce_specversion": {"const": SPEC_VERSION},
            "ce_time": {"type": "string", "format": "date-time", "description": "RFC 3339 time."},
            "ce_subject": {"type": "string", "description": "The key: model or dataset name."},
            "content-type": {"const": CONTENT_TYPE},
            "traceparent": {
                "type": "string",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                "description": "W3C trace context.",
            },
        },
    }


def model_spec_schema() -> dict[str, Any]:
    """The model spec format that `modelbus apply` accepts."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}/model-spec.json",
        **spec_json_schema(),
    }
