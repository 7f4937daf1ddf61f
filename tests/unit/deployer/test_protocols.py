"""Serving's protocol layer without a server: V2 tensors (JSON and Triton's binary extension) into
rows, MLflow's body formats, the refusals every protocol shares (depth, infinities, non-nullable
features), and the optional bearer tokens."""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.deployer.serving import scoring, v2
from services.deployer.serving.batcher import Batcher
from services.deployer.serving.front import PredictFront, route
from services.deployer.serving.metrics import Metrics
from services.deployer.serving.predictor import Predictor, Refused, Target, decode, too_deep
from services.deployer.serving.routing import Engine
from shared.runtime.served import Feature, InputError, Loaded, check_rows
from shared.runtime.settings import Settings

FEATURES = (Feature("tenure", "numeric"), Feature("charges", "numeric"), Feature("plan", "categorical"))


class Constant:
    """A stand-in model session: class 1 with probability 0.75 for every row."""

    def run_rows(self, rows: list[list[Any]]) -> tuple[list[Any], list[list[float]]]:
        return [1] * len(rows), [[0.25, 0.75]] * len(rows)


def engine(features: tuple[Feature, ...] = FEATURES) -> Engine:
    metrics = Metrics(CollectorRegistry())
    loaded = Loaded("churn", 3, "classification", features, [0, 1], "onnx", Constant(), 1000)
    return Engine(loaded, Batcher(loaded, max_rows=64, observe=metrics.batch_rows), ("0", "1"))


def target() -> Target:
    return Target("churn", None, engine())


LIMIT = Predictor(Settings(service_name="t"), None, Metrics(CollectorRegistry()), None).check_row_count  # type: ignore[arg-type]


def test_json_nested_too_deeply_is_refused_before_parsing_and_brackets_in_strings_do_not_count() -> None:
    assert too_deep(b"[" * 40 + b"]" * 40)
    assert not too_deep(b'{"a": [[1, 2], [3]], "b": "' + b"[" * 500 + b'"}')
    with pytest.raises(Refused) as refused:
        decode(b'{"instances": ' + b"[" * 1000 + b"]" * 1000 + b"}")
    assert refused.value.status == 400 and "deeper than 32" in str(refused.value)


def test_v2_json_tensors_become_rows_whatever_their_nesting_or_column_shape() -> None:
    body = {
        "inputs": [
            {"name": "tenure", "shape": [2, 1], "datatype": "FP32", "data": [[3.0], [5.0]]},
            {"name": "charges", "shape": [2], "datatype": "INT64", "data": [10, 20]},
            {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["basic", "pro"]},
        ]
    }
    payload, tensors = v2.decode_request(json.dumps(body).encode(), None)
    assert v2.rows_of(payload, tensors, target(), LIMIT) == [
        {"tenure": 3.0, "charges": 10, "plan": "basic"},
        {"tenure": 5.0, "charges": 20, "plan": "pro"},
    ]


def test_a_matrix_in_feature_order_is_split_into_columns() -> None:
    numeric = (Feature("a", "numeric"), Feature("b", "numeric"))
    body = {"inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
    payload, tensors = v2.decode_request(json.dumps(body).encode(), None)
    matrix = v2.rows_of(payload, tensors, Target("m", None, engine(numeric)), LIMIT)
    assert matrix == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    wrong = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
    payload, tensors = v2.decode_request(json.dumps(wrong).encode(), None)
    with pytest.raises(Refused, match=r"\[N, 3\] but the model reads 2 features \(a, b\)"):
        v2.rows_of(payload, tensors, Target("m", None, engine(numeric)), LIMIT)


def test_binary_tensors_after_the_json_header_decode_as_triton_writes_them() -> None:
    tenure = np.array([1.5, 2.5], dtype="<f8").tobytes()
    charges = np.array([7, 9], dtype="<i4").tobytes()
    plan = b"".join(len(s).to_bytes(4, "little") + s for s in (b"basic", "pr\u00f6".encode()))
    header = json.dumps(
        {
            "inputs": [
                {"name": "tenure", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": len(tenure)}},
                {
                    "name": "charges",
                    "shape": [2],
                    "datatype": "INT32",
                    "parameters": {"binary_data_size": len(charges)},
                },
                {"name": "plan", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(plan)}},
            ]
        }
    ).encode()
    payload, tensors = v2.decode_request(header + tenure + charges + plan, str(len(header)))
    assert v2.rows_of(payload, tensors, target(), LIMIT) == [
        {"tenure": 1.5, "charges": 7, "plan": "basic"},
        {"tenure": 2.5, "charges": 9, "plan": "pr\u00f6"},
    ]


def test_every_malformed_tensor_is_named_in_one_refusal() -> None:
    body = {
        "inputs": [
            {"name": "tenure", "shape": [3], "datatype": "FP64", "data": [1, 2]},
            {"name": "charges", "shape": [2], "datatype": "COMPLEX", "data": [1, 2]},
            {"name": "plan", "shape": [2], "datatype": "FP64", "data": ["a", "b"]},
            {"name": "x", "shape": "2", "datatype": "FP64", "data": [1, 2]},
        ]
    }
    with pytest.raises(Refused) as refused:
        v2.decode_request(json.dumps(body).encode(), None)
    assert refused.value.status == 400
    assert refused.value.errors == [
        "inputs[0] 'tenure': shape [3] holds 3 values, the data has 2",
        "inputs[1] 'charges': unknown datatype 'COMPLEX' (known: " + ", ".join(v2.DATATYPES) + ")",
        "inputs[2] 'plan': FP64 data holds str 'a', not a number",
        "inputs[3] 'x': shape must be a list of non-negative integers, got \"2\"",
    ]


async def test_the_v2_answer_has_predict_and_predict_proba_with_the_version_and_request_id() -> None:
    body = {"inputs": [{"name": n, "shape": [1], "datatype": "BYTES", "data": ["1"]} for n in ("plan",)]}
    body["inputs"] += [{"name": n, "shape": [1], "datatype": "FP64", "data": [1.0]} for n in ("tenure", "charges")]
    settings = Settings(service_name="t")
    predictor = Predictor(settings, None, Metrics(CollectorRegistry()), None)  # type: ignore[arg-type]
    payload, tensors = v2.decode_request(json.dumps(body).encode(), None)
    chosen = target()
    outcome = await predictor.serve(chosen, v2.rows_of(payload, tensors, chosen, LIMIT), "req-1", single=True)
    answer = json.loads(v2.answer(outcome, payload).body)
    assert answer["model_name"] == "churn" and answer["model_version"] == "3" and answer["id"] == "req-1"
    assert answer["parameters"] == {"request_id": "req-1", "version": 3, "role": "pinned"}
    assert answer["outputs"] == [
        {"name": "predict", "shape": [1], "datatype": "INT64", "data": [1]},
        {"name": "predict_proba", "shape": [1, 2], "datatype": "FP64", "parameters": {"classes": '["0", "1"]'},
         "data": [0.25, 0.75]},
    ]  # fmt: skip
    binary = v2.answer(
        outcome, {**payload, "outputs": [{"name": "predict_proba", "parameters": {"binary_data": True}}]}
    )
    length = int(binary.headers["inference-header-content-length"])
    header = json.loads(binary.body[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 16
    assert np.frombuffer(binary.body[length:], dtype="<f8").tolist() == [0.25, 0.75]


def test_infinities_are_refused_and_nulls_only_where_the_schema_forbids_them() -> None:
    strict = (Feature("tenure", "numeric", nullable=False), Feature("plan", "categorical", nullable=False))
    with pytest.raises(InputError) as refused:
        check_rows(
            (*strict, Feature("charges", "numeric")),
            [
                {"tenure": math.nan, "plan": None, "charges": math.inf},
                {"tenure": -math.inf, "plan": "a", "charges": None},
            ],
        )
    assert refused.value.errors == [
        "instances[0].tenure: a value is required, got NaN (the model was trained without missing values)",
        "instances[0].plan: a value is required (the model was trained without missing values)",
        "instances[0].charges: expected a finite number, got Infinity",
        "instances[1].tenure: expected a finite number, got -Infinity",
    ]
    assert math.isnan(check_rows(FEATURES, [{"tenure": None, "charges": math.nan, "plan": None}])[0][1])


def test_mlflow_bodies_in_each_format_give_the_same_rows() -> None:
    records = [{"tenure": 1.0, "plan": "a"}, {"tenure": 2.0, "plan": "b"}]
    bodies = [
        {"dataframe_split": {"columns": ["tenure", "plan"], "data": [[1.0, "a"], [2.0, "b"]]}},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": {"tenure": [1.0, 2.0], "plan": ["a", "b"]}},
        {"inputs": records, "params": {"ignored": True}},
    ]
    for body in bodies:
        assert scoring._records(body, LIMIT) == records, body
    with pytest.raises(Refused, match="exactly one of"):
        scoring._records({"dataframe_records": records, "instances": records}, LIMIT)
    csv = scoring._csv_rows(b"tenure,charges,plan\n1,2.5,007\n\n,3,\n", target(), 1000)
    assert csv == [{"tenure": 1.0, "charges": 2.5, "plan": "007"}, {"tenure": None, "charges": 3.0, "plan": None}]


def test_hostile_v2_shapes_are_refused_before_any_arithmetic_naming_the_limit() -> None:
    def refusal(shape: object, data: object = None, datatype: object = "FP64") -> str:
        body = {"inputs": [{"name": "tenure", "shape": shape, "datatype": datatype, "data": data or [1.0, 2.0]}]}
        with pytest.raises(Refused) as refused:
            v2.decode_request(json.dumps(body).encode(), None)
        assert refused.value.status == 400
        return str(refused.value)

    began = time.perf_counter()
    assert "shape has 30000 dimensions; the limit is 8" in refusal([7] * 30_000)
    assert "non-negative int64" in refusal([10**4000 // 10**3990, 2**63])
    assert f"shape [{2**62}, {2**62}] holds {2**124} values, the data has 2" in refusal([2**62, 2**62])
    assert "shape [0, 4611686018427387904] holds 0 values, the data has 2" in refusal([0, 2**62])
    assert "unknown datatype '{}'" in refusal([2], datatype={})
    assert "unknown datatype '[]'" in refusal([2], datatype=[])
    assert time.perf_counter() - began < 1.0, "hostile shapes are refused without work proportional to them"


def test_requested_outputs_are_checked_before_any_prediction() -> None:
    good = {"name": "tenure", "shape": [1], "datatype": "FP64", "data": [1.0]}
    for outputs, phrase in (
        ({}, "outputs must be a list"),
        ([{"name": {}}], "outputs[0]: an output is an object with a string name"),
        ([{"name": "predict", "parameters": []}], "outputs[0]: parameters must be an object"),
    ):
        with pytest.raises(Refused, match=re.escape(phrase)) as refused:
            v2.decode_request(json.dumps({"inputs": [good], "outputs": outputs}).encode(), None)
        assert refused.value.status == 400
    assert v2.error(422, "x").status == 400, "an invalid input is 400 in the protocol"


def test_too_many_rows_are_refused_while_parsing_in_every_protocol() -> None:
    with pytest.raises(Refused, match="more than 1000 rows") as refused:
        scoring._csv_rows(b"tenure\n" + b"1\n" * 5000, target(), 1000)
    assert refused.value.status == 413
    with pytest.raises(Refused, match="more than 1000 blank lines"):
        scoring._csv_rows(b"\n" * 2_000_000, target(), 1000)
    for body in (b"", b"tenure,plan\n"):
        with pytest.raises(Refused) as empty:
            scoring._csv_rows(body, target(), 1000)
        assert empty.value.status == 400, body
    with pytest.raises(Refused, match="1001 rows exceed the limit of 1000") as refused:
        scoring._records({"dataframe_split": {"columns": ["a"], "data": [[1]] * 1001}}, LIMIT)
    assert refused.value.status == 413
    many = {"inputs": [{"name": "tenure", "shape": [5000], "datatype": "FP64", "data": [1.0] * 5000}]}
    payload, tensors = v2.decode_request(json.dumps(many).encode(), None)
    with pytest.raises(Refused, match="5000 rows exceed the limit of 1000"):
        v2.rows_of(payload, tensors, Target("m", None, engine((Feature("tenure", "numeric"),))), LIMIT)


def test_the_fast_front_knows_each_protocols_predict_routes() -> None:
    assert route("POST", "/v1/models/churn:predict") == ("v1", ("churn", None))
    assert route("POST", "/v1/models/churn/invocations") == ("mlflow", ("churn", None))
    assert route("POST", "/invocations") == ("mlflow", ("", None))
    assert route("POST", "/v2/models/churn/infer") == ("v2", ("churn", None))
    assert route("POST", "/v2/models/churn/versions/2/infer") == ("v2", ("churn", "2"))
    assert route("GET", "/v2/models/churn/infer") is None
    assert route("POST", "/v2/models/churn/other/2/infer") is None


async def test_with_serving_tokens_everything_but_health_needs_a_valid_bearer_token() -> None:
    settings = Settings(service_name="t", serving_tokens="s3cret:gateway,other")
    metrics = Metrics(CollectorRegistry())
    predictor = Predictor(settings, None, metrics, None)  # type: ignore[arg-type]
    app = FastAPI()

    @app.get("/v2/health/ready")
    @app.get("/metrics")
    async def anything() -> dict[str, bool]:
        return {"ok": True}

    front = PredictFront(predictor, app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url="http://s") as http:
        assert (await http.get("/v2/health/ready")).status_code == 200
        refused = await http.post("/v2/models/churn/infer", content=b"{}")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json() == {"error": "a bearer token from MODELBUS_SERVING_TOKENS is required"}
        wrong = await http.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "not one of" in wrong.json()["detail"]
        assert (await http.get("/metrics", headers={"authorization": "Bearer s3cret"})).status_code == 200
        assert (await http.get("/metrics", headers={"authorization": "Bearer other"})).status_code == 200
    assert metrics.unauthorized._value.get() == 2


def resident(model: str, version: int, size: int) -> Engine:
    metrics = Metrics(CollectorRegistry())
    loaded = Loaded(model, version, "classification", FEATURES, [0, 1], "onnx", Constant(), size)
    return Engine(loaded, Batcher(loaded, max_rows=8, observe=metrics.batch_rows), ("0", "1"))


async def test_unpinned_versions_are_evicted_least_recently_used_first_and_routed_ones_never() -> None:
    from datetime import UTC, datetime

    from services.deployer import domain
    from services.deployer.serving.routing import Host, Live
    from shared.contract.spec import Rollout as Policy

    metrics = Metrics(CollectorRegistry())
    host = Host(Settings(service_name="t", serving_memory_bytes=3 * 2**20), None, None, metrics)  # type: ignore[arg-type]
    rollout = domain.start("hot", "ro-1", 1, None, Policy(), datetime(2026, 12, 1, tzinfo=UTC)).rollout
    pinned = resident("hot", 1, 2**20)
    host.engines[("hot", 1)] = pinned
    host.live["hot"] = Live("hot", rollout, None, {}, {1: pinned})
    for model in ("a", "b", "c"):
        host.engines[(model, 1)] = resident(model, 1, 2**20)
    host._drop_unused()  # a, b, c unpinned, in that order; 4 MiB resident against 3
    assert set(host.engines) == {("hot", 1), ("b", 1), ("c", 1)}
    assert await host.engine("b", 1) is host.engines[("b", 1)]  # b used: c is now the oldest
    host.engines[("d", 1)] = resident("d", 1, 2**20)
    host._drop_unused()
    assert set(host.engines) == {("hot", 1), ("b", 1), ("d", 1)}
    host.engines[("huge", 1)] = resident("huge", 1, 10 * 2**20)
    host._drop_unused()  # even alone it does not fit: everything unpinned goes, the routed version stays
    assert set(host.engines) == {("hot", 1)}
    assert metrics.evictions.labels("a")._value.get() == 1 and metrics.resident._value.get() == 2**20
    host.close()


async def test_a_version_over_the_memory_budget_is_refused_naming_it_and_what_was_live_keeps_answering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import UTC, datetime
    from pathlib import Path

    from services.deployer import domain, store
    from services.deployer.serving import routing
    from services.deployer.serving.routing import Host
    from shared.contract.events import ArtifactRef
    from shared.contract.spec import Rollout as Policy

    sizes = {("a", 1): 2**20, ("b", 1): 2 * 2**20, ("a", 2): 3 * 2**20}
    downloaded: list[tuple[str, int]] = []

    def load(_: object, model: str, version: int, refs: object, folder: Path) -> Loaded:
        downloaded.append((model, version))
        return resident(model, version, sizes[(model, version)]).loaded

    monkeypatch.setattr(routing, "load", load)
    metrics = Metrics(CollectorRegistry())
    host = Host(Settings(service_name="t", serving_memory_bytes=3 * 2**20), None, None, metrics)  # type: ignore[arg-type]

    def live(model: str, version: int, stored: int = 1000) -> store.LiveModel:
        rollout = domain.start(model, f"ro-{version}", version, None, Policy(), datetime(2026, 12, 1, tzinfo=UTC))
        ref = ArtifactRef(name="model.onnx", uri=f"s3://m/{model}", sha256="a" * 64, size_bytes=stored)
        return store.LiveModel(model, rollout.rollout, {version: [ref]}, None)

    assert await host._apply(live("a", 1)) and await host._apply(live("b", 1))
    assert set(host.live) == {"a", "b"}  # 3 MiB of 3
    await host._apply(live("a", 2))  # a@2 takes 3 MiB where a@1 took 1: b's 2 MiB leave too little
    assert host.live["a"].rollout.candidate == 1, "a keeps answering with what was live"
    assert "a@2 needs 3.0 MiB" in host.problems["a"] and "MODELBUS_SERVING_MEMORY_BYTES" in host.problems["a"]
    assert ("a", 2) not in host.engines
    await host._apply(live("c", 1, stored=5 * 2**20))  # refused on its stored size, before any download
    assert downloaded == [("a", 1), ("b", 1), ("a", 2)]
    predictor = Predictor(Settings(service_name="t"), host, metrics, None)  # type: ignore[arg-type]
    with pytest.raises(Refused) as refused:
        await predictor.target("c")
    assert refused.value.status == 503 and "c@1 needs 5.0 MiB" in str(refused.value)
    assert metrics.load_failures.labels("a")._value.get() == 1
    host.close()


async def test_a_large_body_with_more_values_than_the_rows_can_hold_is_refused_before_it_is_parsed() -> None:

    metrics = Metrics(CollectorRegistry())
    predictor = Predictor(Settings(service_name="t", serving_max_rows=10), None, metrics, None)  # type: ignore[arg-type]
    engine = resident("churn", 1, 1000)
    target = Target("churn", None, engine)
    budget = predictor.value_budget(target)
    assert budget == 10 * (len(FEATURES) + 1) * 2 + 1000
    parsed: list[bytes] = []

    def work(body: bytes) -> Any:
        parsed.append(body)
        return json.loads(body)

    numbers = json.dumps({"inputs": [{"name": "tenure", "shape": [1], "data": [7] * 70_000}]}).encode()
    with pytest.raises(Refused) as refused:
        await predictor.parse(numbers, target, lambda: work(numbers))
    assert refused.value.status == 413 and f"more than {budget} values" in str(refused.value)
    assert "MODELBUS_SERVING_MAX_ROWS" in str(refused.value) and parsed == [], "refused before any parsing"
    text = json.dumps({"inputs": [{"name": "note", "shape": [1], "data": ["a," * 40_000]}]}).encode()
    assert len(text) > 64 * 1024 and (await predictor.parse(text, target, lambda: work(text)))["inputs"]
    assert parsed == [text], "commas inside strings are no values"
