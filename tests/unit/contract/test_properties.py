"""Properties of event parsing, for any input (Hypothesis): whatever bytes and headers arrive, the
decoder either returns a valid event or refuses with an EnvelopeError whose reason names what was
wrong; it never fails any other way, and what it accepts survives a round trip unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contract.envelope import EnvelopeError, decode, encode
from shared.contract.events import BY_TYPE, Event

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES: dict[str, dict[str, Any]] = {
    path.stem: json.loads(path.read_text()) for path in (ROOT / "schemas/examples").glob("*.json")
}
EXAMPLES = {name: EXAMPLES[re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()] for name in BY_TYPE}
TYPES = sorted(EXAMPLES)
HEADER_NAMES = ["ce_id", "ce_source", "ce_type", "ce_specversion", "ce_time", "ce_subject", "content-type"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid(event_type: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    event = BY_TYPE[event_type].model_validate(EXAMPLES[event_type])
    out = encode(event, source="properties")
    return out.value, list(out.headers)


@FAST
@given(event_type=st.sampled_from(TYPES), body=st.binary(max_size=3000))
def test_any_bytes_as_a_body_are_an_event_or_a_named_refusal(event_type: str, body: bytes) -> None:
    _, headers = valid(event_type)
    try:
        decode(body, headers)
    except EnvelopeError as refused:
        assert refused.kind in ("parse", "validation") and refused.reason


@FAST
@given(
    event_type=st.sampled_from(TYPES),
    changed=st.dictionaries(
        st.sampled_from(HEADER_NAMES), st.one_of(st.binary(max_size=40), st.none()), min_size=1, max_size=4
    ),
)
def test_any_headers_are_read_or_refused_naming_the_header(event_type: str, changed: dict[str, bytes | None]) -> None:
    value, headers = valid(event_type)
    kept = {name: data for name, data in headers}
    for name, data in changed.items():
        if data is None:
            kept.pop(name, None)
        else:
            kept[name] = data
    try:
        decode(value, list(kept.items()))
    except EnvelopeError as refused:
        named = [name for name in changed if name in refused.reason]
        assert named or "event type" in refused.reason, refused.reason


@FAST
@given(event_type=st.sampled_from(TYPES), field=st.data(), replacement=JSON)
def test_a_field_changed_to_anything_is_accepted_or_refused_by_its_name(
    event_type: str, field: st.DataObject, replacement: Any
) -> None:
    document = dict(EXAMPLES[event_type])
    name = field.draw(st.sampled_from(sorted(document)))
    document[name] = replacement
    _, headers = valid(event_type)
    try:
        decoded = decode(json.dumps(document).encode(), headers)
    except EnvelopeError as refused:
        assert refused.kind == "validation" and f"field '{name}" in refused.reason, refused.reason
    else:
        assert isinstance(decoded.event, BY_TYPE[event_type])


@FAST
@given(event_type=st.sampled_from(TYPES), field=st.data())
def test_a_missing_required_field_is_refused_by_its_name(event_type: str, field: st.DataObject) -> None:
    cls: type[Event] = BY_TYPE[event_type]
    required = sorted(n for n, f in cls.model_fields.items() if f.is_required())
    if not required:
        return
    name = field.draw(st.sampled_from(required))
    document = {k: v for k, v in EXAMPLES[event_type].items() if k != name}
    _, headers = valid(event_type)
    with pytest.raises(EnvelopeError, match=f"field '{name}': Field required"):
        decode(json.dumps(document).encode(), headers)


@FAST
@given(
    event_type=st.sampled_from(TYPES),
    event_id=st.text(min_size=1, max_size=60).filter(lambda s: s.strip() == s and "\x00" not in s),
    source=st.text(min_size=1, max_size=60).filter(lambda s: s.strip() == s and "\x00" not in s),
)
def test_what_is_encoded_decodes_to_the_same_event_and_id(event_type: str, event_id: str, source: str) -> None:
    event = BY_TYPE[event_type].model_validate(EXAMPLES[event_type])
    out = encode(event, source=source, event_id=event_id)
    back = decode(out.value, list(out.headers))
    assert back.event == event and back.id == event_id and back.source == source


def test_a_request_id_column_of_another_length_is_named_with_the_columns_it_disagrees_with() -> None:
    document = {**EXAMPLES["PredictionsLogged"], "request_id": ["only-one"]}
    _, headers = valid("PredictionsLogged")
    with pytest.raises(EnvelopeError, match="field 'request_id' is the one that is off") as refused:
        decode(json.dumps(document).encode(), headers)
    assert "field 'model_version'" in refused.value.reason
