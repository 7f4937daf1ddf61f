"""Serving's protocols against the real Kafka, PostgreSQL and S3 server, over real HTTP: the Open
Inference Protocol (V2) called by tritonclient and KServe's InferenceRESTClient, unmodified (in
their own virtualenv); MLflow's scoring protocol compared body for body with `mlflow models serve`
on the same model; versions pinned by name; and the refusals every protocol shares.

Two models: `canary` (v1 logistic regression stable, v2 random forest at 10 %, sticky by
customer_id, region eu-central excluded) and `plain` (v1 alone, promoted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from services.deployer.app import build as build_deployer
from services.deployer.serving.app import Serving
from services.deployer.serving.app import build as build_serving
from services.registry.export import write_mlflow_model
from services.trainer import fit
from shared.contract import topics
from shared.runtime.broker import ensure_topics
from shared.runtime.settings import Settings
from tests.integration import test_deployer
from tests.integration.conftest import drop_topics, eventually, free_port
from tests.integration.test_deployer import FEATURES, apply, changes, on_topic, register, rows
from tests.support import conformance
from tests.support.venvs import clients_python, mlflow_python

ROOT = Path(__file__).resolve().parents[2]
trained = test_deployer.trained  # the module-scoped fixture: both models trained once
NUMERIC = ["tenure_months", "monthly_charges", "support_calls"]
CATEGORICAL = ["plan", "region"]


@dataclass
class Served:
    serving: Serving
    url: str
    canary: str
    plain: str
    settings: Settings


@pytest.fixture(scope="module")
async def served(base_settings: Settings, trained: dict[int, fit.Outcome]) -> AsyncIterator[Served]:
    run = uuid.uuid4().hex[:6]
    settings = base_settings.model_copy(update={"topic_prefix": f"it-{run}", "handler_backoff_seconds": 0.05})
    await ensure_topics(settings)
    canary, plain = f"proto-canary-{run}", f"proto-plain-{run}"
    base = settings.model_copy(update={"otlp_endpoint": None, "serving_refresh_seconds": 30.0})
    deployer = build_deployer(base.model_copy(update={"service_name": "deployer"}))
    serving = build_serving(
        base.model_copy(
            update={"service_name": "serving", "serving_models": f"{canary},{plain}", "serving_batch_rows": 64}
        )
    )
    await deployer.start()
    await serving.start()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(serving.api, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        await apply(base, canary, sticky_key="customer_id")
        await apply(base, plain)
        await register(base, canary, 1, trained[1])
        await register(base, plain, 1, trained[1])
        await changes(base, canary, 1)
        await register(base, canary, 2, trained[2])
        await changes(base, canary, 2)

        async def live() -> bool:
            found = serving.host.live.get(canary)
            return found is not None and found.rollout.state == "canary" and plain in serving.host.live

        await eventually(live, timeout=60, what="both models live in serving")
        yield Served(serving, f"http://127.0.0.1:{port}", canary, plain, base)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        await serving.stop()
        await deployer.stop()
        await drop_topics(settings)


def tensors(batch: list[dict[str, Any]], **extra: list[Any]) -> list[dict[str, Any]]:
    """One V2 tensor per feature (and per extra column), as JSON."""
    made = [{"name": n, "shape": [len(batch)], "datatype": "FP64", "data": [r[n] for r in batch]} for n in NUMERIC]
    made += [
        {"name": n, "shape": [len(batch)], "datatype": "BYTES", "data": [r[n] for r in batch]} for n in CATEGORICAL
    ]
    made += [{"name": n, "shape": [len(v)], "datatype": "BYTES", "data": v} for n, v in extra.items()]
    return made


async def v1(http: httpx.AsyncClient, url: str, model: str, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = await http.post(f"{url}/v1/models/{model}:predict", json={"instances": batch})
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["predictions"]
    return found


async def test_tritonclient_and_kserve_call_serving_unmodified_and_get_what_v1_answers(
    served: Served, tmp_path: Path
) -> None:
    # The clients' tensors hold no nulls: rows without any.
    complete = [r for r in rows(60, seed=11) if None not in r.values()][:25]
    batch = [{k: v for k, v in r.items() if k != "customer_id"} for r in complete]
    spec = {"numeric": NUMERIC, "categorical": CATEGORICAL, "rows": batch, "version": "1"}
    (tmp_path / "rows.json").write_text(json.dumps(spec))
    run = await asyncio.to_thread(
        subprocess.run,
        [str(clients_python()), str(ROOT / "tests/support/v2clients.py"), served.url, served.plain,
         str(tmp_path / "rows.json"), str(tmp_path / "out.json")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    got = json.loads((tmp_path / "out.json").read_text())
    triton, kserve = got["triton"], got["kserve"]
    async with httpx.AsyncClient(timeout=30) as http:
        expected = await v1(http, served.url, served.plain, batch)
    labels = [a["prediction"] for a in expected]
    probabilities = [[a["probabilities"]["0"], a["probabilities"]["1"]] for a in expected]

    assert (triton["live"], triton["ready"], triton["model_ready"], triton["version_ready"]) == (True,) * 4
    assert triton["unknown_ready"] is False and triton["server"]["name"] == "modelbus"
    metadata = triton["metadata"]
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("tenure_months", "FP64"), ("monthly_charges", "FP64"), ("support_calls", "FP64"),
        ("plan", "BYTES"), ("region", "BYTES"),
    ]  # fmt: skip
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("predict", "INT64", [-1]),
        ("predict_proba", "FP64", [-1, 2]),
    ]
    assert metadata["versions"] == ["1"] and triton["version_metadata"]["parameters"]["version"] == 1
    for way in ("binary", "json", "pinned"):
        answer = triton[way]
        assert answer["predict"] == labels, way
        assert answer["predict_proba"] == probabilities, way
        assert answer["model_version"] == "1" and answer["parameters"]["version"] == 1
    assert all("binary_data_size" in o["parameters"] for o in triton["binary"]["outputs"])
    assert triton["binary"]["parameters"]["request_id"] == "triton-binary"
    assert triton["pinned"]["parameters"]["role"] == "pinned"
    assert triton["missing"]["status"] == "400"
    assert "missing input 'tenure_months'" in triton["missing"]["message"]

    assert (kserve["live"], kserve["ready"], kserve["model_ready"]) == (True, True, True)
    assert kserve["infer"]["id"] == "kserve-1"
    assert kserve["infer"]["predict"] == labels and kserve["infer"]["predict_proba"] == probabilities


async def test_v2_routes_rows_like_v1_sticky_by_key_with_shadow_and_logs_them(served: Served) -> None:
    keyed = rows(1000, seed=5)
    ids = [r["customer_id"] for r in keyed]
    async with httpx.AsyncClient(timeout=60) as http:
        reference = await v1(http, served.url, served.canary, keyed)
        body = {"id": "v2-sticky", "inputs": tensors(keyed, customer_id=ids)}
        answer = await http.post(f"{served.url}/v2/models/{served.canary}/infer", json=body)
        assert answer.status_code == 200, answer.text
        got = answer.json()
        versions = [int(v) for v in str(got["parameters"]["version"]).split(",")]
        assert versions == [a["version"] for a in reference], "each row answered by the version /v1 gives its key"
        share = Counter(versions)[2] / len(versions)
        assert abs(share - 0.10) <= 0.03
        outputs = {o["name"]: o for o in got["outputs"]}
        assert outputs["predict"]["data"] == [a["prediction"] for a in reference]
        assert outputs["predict_proba"]["shape"] == [1000, 2]
        assert json.loads(outputs["predict_proba"]["parameters"]["classes"]) == ["0", "1"]

        # The key as a request parameter: one version for every row of the request, the one /v1 gives
        # the key. Rows outside the excluded segment, for a key on each version.
        outside = [r for r in keyed if r["region"] != "eu-central"][:50]
        for version in (1, 2):
            key = next(
                r["customer_id"]
                for r, a in zip(keyed, reference, strict=True)
                if a["version"] == version and r["region"] != "eu-central"
            )
            body = {"parameters": {"customer_id": key}, "inputs": tensors(outside)}
            answered = (await http.post(f"{served.url}/v2/models/{served.canary}/infer", json=body)).json()
            assert answered["parameters"]["version"] == version and answered["model_version"] == str(version)

        # An excluded segment gets the stable version, whatever the key.
        body = {"inputs": tensors([{**r, "region": "eu-central"} for r in keyed[:300]], customer_id=ids[:300])}
        answered = (await http.post(f"{served.url}/v2/models/{served.canary}/infer", json=body)).json()
        assert answered["parameters"]["version"] == 1

    async def logged() -> bool:
        batches = await on_topic(served.settings, topics.PREDICTIONS_LOGGED, served.canary)
        found = {p.request_id for b in batches for p in b.records()}
        return {f"v2-sticky-{i}" for i in range(1000)} <= found

    await eventually(logged, timeout=30, what="the V2 request's rows on the predictions topic")
    records = [
        p for b in await on_topic(served.settings, topics.PREDICTIONS_LOGGED, served.canary) for p in b.records()
    ]
    mine = [p for p in records if p.request_id.startswith("v2-sticky-")]
    answered_rows = {p.request_id: p for p in mine if p.role != "shadow"}
    assert len(answered_rows) == 1000 and set(answered_rows["v2-sticky-0"].features) == set(FEATURES)
    assert answered_rows["v2-sticky-0"].sticky_key == ids[0]
    shadowed = {p.request_id for p in mine if p.role == "shadow"}
    assert shadowed and shadowed == {i for i, p in answered_rows.items() if p.role == "canary"}


async def test_naming_a_version_pins_it_is_counted_and_is_not_rollout_evidence(served: Served) -> None:
    batch = rows(40, seed=8)
    ids = [r["customer_id"] for r in batch]
    async with httpx.AsyncClient(timeout=30) as http:
        body = {"id": "pinned-check", "inputs": tensors(batch, customer_id=ids)}
        answer = await http.post(f"{served.url}/v2/models/{served.canary}/versions/2/infer", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["parameters"] == {"request_id": "pinned-check", "version": 2, "role": "pinned"}
        unknown = await http.post(f"{served.url}/v2/models/{served.canary}/versions/9/infer", json=body)
        assert unknown.status_code == 404
        assert unknown.json() == {
            "error": f"{served.canary}@9 is not rolled out: the deployer routes {served.canary} to v1, v2"
        }
        metrics = (await http.get(f"{served.url}/metrics")).text
    line = f'modelbus_serving_pinned_requests_total{{model="{served.canary}",protocol="v2",version="2"}} 1.0'
    assert line in metrics
    await asyncio.sleep(served.settings.prediction_log_flush_seconds * 3)
    records = [
        p for b in await on_topic(served.settings, topics.PREDICTIONS_LOGGED, served.canary) for p in b.records()
    ]
    assert not [p for p in records if p.request_id.startswith("pinned-check")]


async def test_mlflow_scoring_bodies_equal_mlflow_models_serve_for_the_same_model(
    served: Served, trained: dict[int, fit.Outcome], tmp_path: Path
) -> None:
    outcome = trained[1]
    files = {n: Path(outcome.files[n]) for n in ("model.skops", "manifest.json", "test-split.parquet")}
    version = {"model": served.plain, "version": 1, "run_id": outcome.run_id, "status": "approved", "artifacts": [],
               "task": "classification"}  # fmt: skip
    folder = write_mlflow_model(tmp_path / "mlflow-model", version=version, files=files)
    port = free_port()
    log = (tmp_path / "mlflow.log").open("w")
    mlflow = await asyncio.to_thread(
        subprocess.Popen,
        [str(mlflow_python()), "-m", "mlflow", "models", "serve", "-m", str(folder), "--env-manager", "local",
         "--host", "127.0.0.1", "-p", str(port), "--workers", "1"],
        stdout=log, stderr=log, env={**os.environ, "PATH": f"{mlflow_python().parent}:{os.environ['PATH']}"},
    )  # fmt: skip
    batch = [{k: v for k, v in r.items() if k != "customer_id"} for r in rows(30, seed=21)]
    for row in batch:  # MLflow's schema enforcement wants every required column present and typed
        for name in NUMERIC:
            row[name] = 0.0 if row[name] is None else float(row[name])
    columns = FEATURES
    csv_text = ",".join(columns) + "\n" + "\n".join(",".join(str(r[c]) for c in columns) for r in batch) + "\n"
    bodies: list[tuple[str, str, str]] = [
        ("dataframe_split", "application/json",
         json.dumps({"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in batch]}})),
        ("dataframe_records", "application/json", json.dumps({"dataframe_records": batch})),
        ("instances", "application/json", json.dumps({"instances": batch})),
        ("inputs", "application/json", json.dumps({"inputs": {c: [r[c] for r in batch] for c in columns}})),
        ("csv", "text/csv", csv_text),
        ("params", "application/json; charset=utf-8", json.dumps({"dataframe_records": batch[:3], "params": {}})),
    ]  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            deadline = asyncio.get_running_loop().time() + 120
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{port}/ping")).status_code == 200:
                        break
                assert mlflow.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
                assert asyncio.get_running_loop().time() < deadline, "mlflow models serve did not start"
                await asyncio.sleep(0.5)

            async def both(body: str | bytes, content_type: str) -> tuple[httpx.Response, httpx.Response]:
                """The same request to `mlflow models serve` and to serving's MLflow route."""
                kind = {"content-type": content_type}
                theirs = await http.post(f"http://127.0.0.1:{port}/invocations", content=body, headers=kind)
                ours = await http.post(f"{served.url}/v1/models/{served.plain}/invocations", content=body, headers=kind)
                return theirs, ours

            for name, content_type, body in bodies:
                theirs, ours = await both(body, content_type)
                assert theirs.status_code == ours.status_code == 200, (name, theirs.text, ours.text)
                assert ours.json() == theirs.json(), name
                assert list(ours.json()) == ["predictions"]
            # Both refuse what is not JSON, in MLflow's error shape.
            theirs, ours = await both(b"{nope", "application/json")
            assert theirs.status_code == ours.status_code == 400
            assert theirs.json()["error_code"] == ours.json()["error_code"] == "BAD_REQUEST"
            # An incompatible dataframe (a required column missing: the schema refuses it) and an
            # empty CSV body (unreadable): 400 in both, with MLflow's error codes.
            missing = json.dumps({"dataframe_records": [{k: v for k, v in batch[0].items() if k != columns[0]}]})
            for name, content_type, body, code in (
                ("missing column", "application/json", missing, "INVALID_PARAMETER_VALUE"),
                ("empty CSV", "text/csv", "", "BAD_REQUEST"),
            ):
                theirs, ours = await both(body, content_type)
                assert theirs.status_code == ours.status_code == 400, (name, theirs.text, ours.text)
                assert theirs.json()["error_code"] == ours.json()["error_code"] == code, (name, theirs.text, ours.text)
            # MLflow's own client, unmodified, in its virtualenv: ping and version.
            host, served_port = served.url.removeprefix("http://").split(":")
            client = await asyncio.to_thread(
                subprocess.run,
                [str(mlflow_python()), "-c",
                 "import sys; from mlflow.pyfunc.scoring_server.client import ScoringServerClient as C;"
                 " c = C(sys.argv[1], int(sys.argv[2])); c.ping(); print(c.get_version())", host, served_port],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert client.returncode == 0 and client.stdout.strip(), client.stderr[-2000:]
            unsupported = await http.post(
                f"{served.url}/invocations", content=b"x", headers={"content-type": "text/xml"}
            )
            assert unsupported.status_code == 415
            several = await http.post(
                f"{served.url}/invocations", content=bodies[1][2], headers={"content-type": "application/json"}
            )
            assert several.status_code == 404 and served.plain in several.json()["message"]
    finally:
        mlflow.terminate()
        await asyncio.to_thread(mlflow.wait, 30)
        log.close()


def deep(levels: int) -> bytes:
    return b'{"inputs": ' + b"[" * levels + b"]" * levels + b"}"


async def test_bad_input_is_refused_in_each_protocols_shape_and_good_requests_beside_it_still_get_200(
    served: Served,
) -> None:
    good = [r for r in rows(40, seed=13) if None not in r.values()][:4]
    infer = f"{served.url}/v2/models/{served.canary}/infer"
    predict = f"{served.url}/v1/models/{served.canary}:predict"
    invocations = f"{served.url}/v1/models/{served.canary}/invocations"
    infinite = json.dumps({"inputs": tensors([{**good[0], "monthly_charges": float("inf")}])})
    extra = json.dumps({"inputs": [*tensors(good), {**tensors(good)[0], "name": "nope"}]}).encode()
    v1_inf = b'{"instance": ' + json.dumps({**good[0], "tenure_months": float("inf")}).encode() + b"}"
    mlflow_inf = json.dumps({"dataframe_records": [{**good[0], "support_calls": float("inf")}]}).encode()
    finite = "expected a finite number, got Infinity"
    cases: list[tuple[str, str, bytes, int, str]] = [
        ("v2 shape", infer, json.dumps({"inputs": [{**tensors(good)[0], "shape": [3]}, *tensors(good)[1:]]}).encode(),
         400, "inputs[0] 'tenure_months': shape [3] holds 3 values, the data has 4"),
        ("v2 datatype", infer, json.dumps({"inputs": [{**tensors(good)[0], "datatype": "FP128"}]}).encode(),
         400, "inputs[0] 'tenure_months': unknown datatype 'FP128'"),
        ("v2 unknown input", infer, extra, 400, "inputs[5] 'nope': not a feature of"),
        ("v2 Infinity", infer, infinite.encode(), 400, f"input 'monthly_charges'[0]: {finite}"),
        ("v2 1e999", infer, infinite.replace("Infinity", "1e999").encode(), 400, "got Infinity"),
        ("v2 -Infinity", infer, infinite.replace("Infinity", "-Infinity").encode(), 400, "got -Infinity"),
        ("v2 deep", infer, deep(1000), 400, "nests JSON deeper than 32 levels"),
        ("v2 not JSON", infer, b"{", 400, "is not JSON"),
        ("v2 too large", infer, b" " * (served.settings.serving_max_body_bytes + 1), 413, "exceeds"),
        ("v1 Infinity", predict, v1_inf, 422, f"instance.tenure_months: {finite}"),
        ("v1 deep", predict, b'{"instances": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400, "deeper than 32"),
        ("mlflow Infinity", invocations, mlflow_inf, 400, f"row 0, column support_calls: {finite}"),
        ("mlflow deep", invocations, b'{"instances": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400, "deeper than 32"),
    ]  # fmt: skip
    async with httpx.AsyncClient(timeout=60) as http:
        for case, url, body, status, phrase in cases:
            answer = await http.post(url, content=body, headers={"content-type": "application/json"})
            assert answer.status_code == status, (case, answer.text)
            text = answer.json().get("error") or answer.json().get("message") or json.dumps(answer.json()["detail"])
            assert phrase in text, (case, text)
            if url == infer:
                assert list(answer.json()) == ["error"], case

        # Poisoned and good requests interleaved, so they share micro-batches: every good one gets 200.
        poisoned = [c for c in cases if c[3] != 413]
        good_v2 = json.dumps({"inputs": tensors(good)}).encode()
        good_v1 = json.dumps({"instances": good}).encode()

        async def send(url: str, body: bytes) -> int:
            answer = await http.post(url, content=body, headers={"content-type": "application/json"})
            return answer.status_code

        calls = []
        for index in range(600):
            if index % 3 == 2:
                _, url, body, _, _ = poisoned[index % len(poisoned)]
                calls.append(send(url, body))
            else:
                calls.append(send(infer, good_v2) if index % 2 else send(predict, good_v1))
        statuses = await asyncio.gather(*calls)
    good_statuses = [s for i, s in enumerate(statuses) if i % 3 != 2]
    assert good_statuses == [200] * 400
    assert all(400 <= s < 500 for i, s in enumerate(statuses) if i % 3 == 2)


# Where serving answers the OIP REST document otherwise, on purpose (the README lists them too).
OIP_DIFFERENCES = [
    conformance.Difference(
        r"/ready$", "status_code_conformance",
        "a model or version that is not ready answers 404 (unknown) or 400 (known, not loaded yet), as Triton"
        " does: the protocol's text says a 4xx means not ready; MLServer's document lists 200 alone",
    ),
]  # fmt: skip


@pytest.mark.timeout(600)
async def test_the_open_inference_protocols_own_document_holds_against_serving(served: Served) -> None:
    report = await asyncio.to_thread(
        conformance.run,
        "OIP REST (MLServer's dataplane.json) on serving",
        conformance.oip_document(),
        served.url,
        headers={},
        examples=int(os.environ.get("MODELBUS_CONFORMANCE_EXAMPLES", "30")),
        seed=20261207,
        deliberate=OIP_DIFFERENCES,
        choose={"model_name": [served.plain, served.canary], "model_version": ["1", "2"]},
        skip=r"/generate|/infer_stream",  # MLServer's LLM extensions: not in the protocol's text
    )
    print("\n" + report.summary())
    assert report.cases > 0 and report.statuses[200] > 0, "cases reached a served model"
    assert report.server_errors == 0, report.summary()
    assert report.unexplained == [], report.summary()
