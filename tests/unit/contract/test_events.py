from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from shared.contract.events import EVENT_TYPES, DataArrived, Event
from shared.contract.schemas import event_schema, kebab
from shared.ops.schemas import stale

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "schemas" / "examples"


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.event_type)
def test_every_event_validates_its_example_in_python_and_against_schemas(cls: type[Event]) -> None:
    example = json.loads((EXAMPLES / f"{kebab(cls.event_type)}.json").read_text())
    event = cls.model_validate(example)
    # A non-Python producer validating against schemas/ must accept the same document.
    published = json.loads((ROOT / "schemas" / "events" / f"{kebab(cls.event_type)}.json").read_text())
    jsonschema.validate(example, published)
    # What we produce must satisfy the published schema too.
    jsonschema.validate(json.loads(event.model_dump_json()), event_schema(cls))


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.event_type)
def test_every_field_is_documented(cls: type[Event]) -> None:
    undocumented = [name for name, f in cls.model_fields.items() if not f.description]
    assert undocumented == []


def test_events_are_frozen() -> None:
    event = DataArrived(dataset="churn", version="1", uri="file:///data/churn.csv")
    with pytest.raises(ValidationError):
        event.version = "2"  # type: ignore[misc]


def test_schemas_folder_is_not_stale() -> None:
    assert stale(ROOT / "schemas") == [], "run `modelbus schemas generate` and commit schemas/"


def test_asyncapi_lists_every_topic_and_message() -> None:
    document = json.loads((ROOT / "schemas" / "asyncapi.json").read_text())
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {f"modelbus.{cls.topic}" for cls in EVENT_TYPES} <= addresses
    assert {cls.event_type for cls in EVENT_TYPES} <= set(document["components"]["schemas"])
