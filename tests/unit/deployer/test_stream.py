"""The scorer's reading of input messages and writing of output messages (services.deployer.serving.
stream), with no broker: request ids, rows and lists, and bad messages set aside with their reason
while the others of the batch are scored."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from services.deployer.serving import stream
from services.deployer.serving.metrics import Metrics
from services.deployer.serving.predictor import Predictor, Target
from shared.contract.streams import STREAM_OUTPUT
from shared.runtime.settings import Settings
from tests.unit.deployer.test_protocols import target


def record(value: bytes | None, offset: int, key: bytes | None = b"c-1", headers: tuple[Any, ...] = ()) -> Any:
    return ConsumerRecord(
        "p.inputs.churn", 2, offset, 0, 0, key, value, None, len(value or b""), len(key or b""), list(headers)
    )


ROW = {"tenure": 3, "charges": 20.5, "plan": "basic"}


class Pinned(Predictor):
    """The predictor of the protocol tests, answering every model from one engine."""

    async def target(self, name: str, version: int | None = None, protocol: str = "v1") -> Target:
        return target()


def test_a_row_is_one_request_and_a_list_numbers_its_rows_after_the_offset_or_the_given_id() -> None:
    one = stream.read("churn", record(json.dumps(ROW).encode(), 41))
    assert isinstance(one, stream.Message) and one.ids == ["churn-2-41"] and one.key == "c-1" and not one.listed
    many = stream.read("churn", record(json.dumps([ROW, ROW]).encode(), 42, headers=(("request-id", b"order-7"),)))
    assert isinstance(many, stream.Message) and many.ids == ["order-7-0", "order-7-1"] and many.listed


def test_what_is_not_a_row_or_a_list_of_rows_is_bad_with_the_reason() -> None:
    cases = {b"{oops": "parse", b"[]": "validation", b"42": "validation", b'{"a": [1]}': "validation", None: "parse"}
    for value, kind in cases.items():
        bad = stream.read("churn", record(value, 1))
        assert isinstance(bad, stream.Bad) and bad.kind == kind, (value, bad)
    nested = stream.read("churn", record(b'{"a": {"b": 1}}', 1))
    assert isinstance(nested, stream.Bad) and "a row (an object of feature values)" in nested.reason


async def test_a_batch_scores_its_good_messages_and_sets_aside_each_bad_one_with_its_reason() -> None:
    predictor = Pinned(Settings(service_name="t"), None, Metrics(CollectorRegistry()), None)  # type: ignore[arg-type]
    records = [
        record(json.dumps(ROW).encode(), 1),
        record(json.dumps({**ROW, "charges": "lots"}).encode(), 2, key=b"c-2"),
        record(json.dumps([ROW, ROW, ROW]).encode(), 3, key=None),
        record(b"not json", 4),
    ]
    scored = await stream.score(predictor, "churn", records)
    assert [(b.record.offset, b.kind) for b in scored.bad] == [(4, "parse"), (2, "validation")]
    assert "charges" in scored.bad[1].reason
    outputs = {m.record.offset: json.loads(value) for m, value in scored.outputs}
    assert sorted(outputs) == [1, 3]
    single, listed = outputs[1], outputs[3]
    assert single["request_id"] == "churn-2-1" and single["key"] == "c-1" and single["offset"] == 1
    assert single["prediction"] == 1 and single["probabilities"] == {"0": 0.25, "1": 0.75}
    assert [p["request_id"] for p in listed] == ["churn-2-3-0", "churn-2-3-1", "churn-2-3-2"]
    assert all(p["key"] is None for p in listed)


async def test_one_call_scores_every_good_row_of_a_batch_and_the_outputs_follow_the_contract() -> None:
    predictor = Pinned(Settings(service_name="t"), None, Metrics(CollectorRegistry()), None)  # type: ignore[arg-type]
    records = [record(json.dumps([ROW] * 5).encode(), i) for i in range(10)]
    scored = await stream.score(predictor, "churn", records)
    assert len(scored.outcomes) == 1 and len(scored.outcomes[0].answers) == 50
    for _, value in scored.outputs:
        found = json.loads(value)
        for p in found:
            p["role"] = "stable"  # a pinned engine answers as "pinned"; a live one as stable or canary
        STREAM_OUTPUT.validate_python(found)
