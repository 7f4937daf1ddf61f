from __future__ import annotations

import json

import pytest

from shared.contract.envelope import EnvelopeError, decode, encode
from shared.contract.events import DataArrived, ModelTrained

SHA = "a" * 64


def data_arrived() -> DataArrived:
    return DataArrived(dataset="churn", version="v1", uri="s3://datasets/churn.csv", sha256=SHA)


def test_round_trip_keeps_event_and_cloudevents_attributes() -> None:
    event = data_arrived()
    message = encode(
        event, source="/modelbus/test", trace_headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    )
    envelope = decode(message.value, message.headers)
    assert envelope.event == event
    assert envelope.id == message.event_id
    assert envelope.source == "/modelbus/test"
    assert envelope.type == "DataArrived"
    assert envelope.traceparent == "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    headers = dict(message.headers)
    assert headers["ce_type"] == b"io.modelbus.DataArrived"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["content-type"] == b"application/json"
    assert message.key == b"churn"


def _headers(**overrides: str | None) -> list[tuple[str, bytes]]:
    base = {
        "ce_id": "id-1",
        "ce_source": "/producer",
        "ce_type": "io.modelbus.DataArrived",
        "ce_specversion": "1.0",
        "content-type": "application/json",
    }
    base.update(overrides)
    return [(k, v.encode()) for k, v in base.items() if v is not None]


BODY = json.dumps({"dataset": "churn", "version": "v1", "uri": "s3://d/churn.csv"}).encode()


@pytest.mark.parametrize(
    ("value", "headers", "kind", "fragment"),
    [
        (b"{not json", _headers(), "parse", "body is not JSON"),
        (b"\xff\xfe", _headers(), "parse", "not UTF-8"),
        (b"[1, 2]", _headers(), "parse", "JSON object"),
        (BODY, _headers(ce_id=None), "parse", "ce_id"),
        (BODY, _headers(ce_type="io.modelbus.Nope"), "unknown-type", "unknown event type"),
        (BODY, _headers(ce_specversion="0.3"), "parse", "ce_specversion"),
        (BODY, _headers(**{"content-type": "text/plain"}), "parse", "content-type"),
        (
            json.dumps({"dataset": "churn", "version": "v1"}).encode(),
            _headers(),
            "validation",
            "field 'uri': Field required",
        ),
        (
            json.dumps({"dataset": "churn", "version": "v1", "uri": "http://x"}).encode(),
            _headers(),
            "validation",
            "field 'uri'",
        ),
        (
            json.dumps({"dataset": "churn", "version": "v1", "uri": "s3://d/c.csv", "schema_version": "2.0"}).encode(),
            _headers(),
            "validation",
            "schema_version 2.0 has major 2",
        ),
    ],
)
def test_bad_messages_are_refused_with_a_reason_naming_the_problem(
    value: bytes, headers: list[tuple[str, bytes]], kind: str, fragment: str
) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode(value, headers)
    assert caught.value.kind == kind
    assert fragment in caught.value.reason


def test_newer_minor_version_with_unknown_fields_is_accepted() -> None:
    body = {"dataset": "churn", "version": "v1", "uri": "s3://d/c.csv", "schema_version": "1.7", "new_field": 1}
    envelope = decode(json.dumps(body).encode(), _headers())
    assert envelope.event.schema_version == "1.7"


def test_an_event_type_that_does_not_belong_on_the_topic_is_refused() -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode(BODY, _headers(), allowed=frozenset({ModelTrained.event_type}))
    assert caught.value.kind == "unknown-type"
    assert "does not belong" in caught.value.reason


def test_oversized_bodies_are_refused() -> None:
    big = json.dumps({"dataset": "churn", "version": "v1", "uri": "s3://d/" + "x" * 2000}).encode()
    with pytest.raises(EnvelopeError, match="limit is 1000"):
        decode(big, _headers(), max_bytes=1000)
