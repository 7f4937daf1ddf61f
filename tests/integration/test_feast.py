"""Features from Feast, with real Feast (its local provider, applied by its own `feast apply`) and
the real Kafka, PostgreSQL and S3 server: point-in-time training frames, the spec checked against
the Feast registry, serving by entity key, the missing-entity policies, and an online store
(PostgreSQL, reached through toxiproxy) cut off in the middle of a load.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr

from services.deployer.app import build as build_deployer
from services.deployer.serving.app import Serving
from services.deployer.serving.app import build as build_serving
from services.registry.app import build as build_registry
from services.trainer import fit
from shared.contract import topics
from shared.contract.events import ModelSpecApplied, PredictionsLogged
from shared.contract.spec import FeastFeatures, ModelSpec
from shared.ops import feast as feast_ops
from shared.ops.example_data import activity_frame, churn_feast_frame
from shared.runtime import feast
from shared.runtime.features import prepare
from shared.runtime.modelfile import load_model
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec
from tests.integration.conftest import eventually
from tests.integration.test_deployer import changes, on_topic, publish, register
from tests.support.toxics import Toxiproxy

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec((ROOT / "schemas/examples/model-spec-feast.yaml").read_text())
ONLINE_PROXY, POSTGRES_PORT = 25434, 5432


def quiet(_: str) -> None:
    """Feast's command output is not needed in a passing test."""


@pytest.fixture(scope="module")
def example_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example feature repo, applied and materialized (SQLite online store)."""
    repo = tmp_path_factory.mktemp("feast") / "repo"
    feast_ops.apply(repo, quiet, example=True)
    return repo


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("feast-data") / "churn-feast.csv"
    churn_feast_frame(activity_frame(), 3000).to_csv(path, index=False)
    return path


def train(spec: ModelSpec, data: Path, repo: Path, out: Path) -> fit.Outcome:
    outcome = fit.train(
        fit.Job("run-" + uuid.uuid4().hex[:8], spec, str(data), "csv", "0" * 64, str(out), "t", feast_repo=str(repo))
    )
    assert outcome.ok, outcome.reason
    return outcome


# ---------------------------------------------------------------- training


TINY_DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64

customer = Entity(name="customer", join_keys=["customer_id"])
balance = FeatureView(
    name="balance",
    entities=[customer],
    ttl=timedelta(days=30),
    schema=[Field(name="amount", dtype=Float64)],
    source=FileSource(path="data/balance.parquet", timestamp_field="event_timestamp"),
)
"""


def test_each_training_row_gets_the_value_as_of_its_own_timestamp_never_a_later_one(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    shutil.copyfile(feast_ops.EXAMPLE_REPO / "feature_store.yaml", repo / "feature_store.yaml")
    (repo / "balance.py").write_text(TINY_DEFINITIONS)
    at = pd.Timestamp
    pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c1", "c2"],
            "event_timestamp": [
                at("2026-01-01", tz="UTC"),
                at("2026-01-10", tz="UTC"),
                at("2026-01-20", tz="UTC"),
                at("2026-01-05", tz="UTC"),
            ],
            "amount": [10.0, 20.0, 30.0, 100.0],
        }
    ).to_parquet(repo / "data/balance.parquet", index=False)
    feast_ops.apply(repo, quiet, example=False, materialize=False)
    # (customer, observed at) -> the amount as of then, worked out by hand from the four snapshots.
    expected = [
        ("c1", "2026-01-09T23:59:59Z", 10.0),  # the next day's 20 is in its future
        ("c1", "2026-01-10T00:00:00Z", 20.0),  # a snapshot taken at the very moment counts
        ("c1", "2026-01-25T12:00:00Z", 30.0),
        ("c1", "2025-12-31T00:00:00Z", None),  # before any snapshot
        ("c2", "2026-01-04T00:00:00Z", None),  # c2's only snapshot is a day later
        ("c2", "2026-01-20T00:00:00Z", 100.0),
        ("c2", "2026-03-01T00:00:00Z", None),  # past the view's 30-day ttl
        ("c3", "2026-01-15T00:00:00Z", None),  # an entity Feast never saw
    ]
    frame = pd.DataFrame(
        {
            "customer_id": [c for c, _, _ in expected],
            "event_timestamp": [t for _, t, _ in expected],
            "region": [f"r{i}" for i in range(len(expected))],
            "label": [i % 2 for i in range(len(expected))],
        }
    )
    spec = SPEC.model_copy(
        update={
            "features": [
                *SPEC.features[:1],
                SPEC.features[0].model_copy(update={"name": "balance:amount", "type": "numeric"}),
            ],
            "feast": FeastFeatures(entity="customer_id", event_timestamp="event_timestamp"),
        }
    )
    job = fit.Job("pit", spec, "-", "csv", "0" * 64, str(tmp_path / "out"), "t", feast_repo=str(repo))
    joined, lineage = fit._with_feast(job, frame)
    got = [None if pd.isna(v) else float(v) for v in joined["balance:amount"]]
    assert got == [amount for _, _, amount in expected]
    assert list(joined["region"]) == list(frame["region"])  # the rows' own order and columns kept
    assert lineage.views == ["balance"]
    assert lineage.sources["balance"] == hashlib.sha256((repo / "data/balance.parquet").read_bytes()).hexdigest()


def test_a_run_records_its_feature_views_the_registry_digest_and_the_sources_digest(
    example_repo: Path, dataset: Path, tmp_path: Path
) -> None:
    outcome = train(SPEC, dataset, example_repo, tmp_path / "out")
    manifest = json.loads(Path(outcome.files["manifest.json"]).read_text())
    found = manifest["features_from"]
    source = example_repo / feast_ops.EXAMPLE_SOURCE
    assert found["views"] == ["customer_activity"]
    assert found["features"] == SPEC.feast_refs()
    assert found["sources"] == {"customer_activity": hashlib.sha256(source.read_bytes()).hexdigest()}
    assert found["registry_sha256"] == feast.lineage(feast.open_store(example_repo), SPEC.feast_refs()).registry_sha256
    assert outcome.features_from is not None and outcome.features_from.entity == "customer_id"
    # The reference profile covers the joined features (drift is watched on what the model saw).
    assert outcome.profile is not None and "customer_activity:logins_7d" in outcome.profile.features
    assert "model.onnx" in outcome.files  # feature_view:feature names export (as skl2onnx spells them)


# ---------------------------------------------------------------- the spec


async def test_a_spec_naming_an_unknown_feature_view_or_feature_is_refused_with_its_yaml_path(
    settings: Settings, example_repo: Path
) -> None:
    registry = build_registry(
        settings.model_copy(
            update={"api_tokens": SecretStr("adm=admin:alice"), "otlp_endpoint": None, "feast_repo": example_repo}
        )
    )
    await registry.start()
    try:
        text = (ROOT / "schemas/examples/model-spec-feast.yaml").read_text()
        text = text.replace("model: churn-feast", f"model: feast-{uuid.uuid4().hex[:6]}")
        bad = text.replace('"customer_activity:devices"', '"customer_actvity:devices"')
        bad = bad.replace('"customer_activity:nps_score"', '"customer_activity:nps"')
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=registry.api), base_url="http://r") as http:
            auth = {"Authorization": "Bearer adm"}
            refused = await http.post("/v1/specs", json={"spec_yaml": bad}, headers=auth)
            assert refused.status_code == 422, refused.text
            errors = {e["path"]: e["message"] for e in refused.json()["errors"]}
            assert "unknown feature view 'customer_actvity'" in errors["features[9].name"]
            assert "has no feature 'nps'" in errors["features[11].name"]
            applied = await http.post("/v1/specs", json={"spec_yaml": text}, headers=auth)
            assert applied.status_code == 200, applied.text
    finally:
        await registry.stop()


# ---------------------------------------------------------------- serving


@dataclass
class Served:
    serving: Serving
    http: httpx.AsyncClient
    settings: Settings
    models: dict[str, str]  # policy -> model name
    outcomes: dict[str, fit.Outcome]


@contextlib.asynccontextmanager
async def serving_of(settings: Settings, repo: Path, outcomes: dict[str, fit.Outcome]) -> AsyncIterator[Served]:
    """A deployer and a serving process reading Feast at `repo`, each outcome live as a model."""
    run = uuid.uuid4().hex[:6]
    models = {policy: f"feast-{policy}-{run}" for policy in outcomes}
    base = settings.model_copy(update={"otlp_endpoint": None, "feast_repo": repo, "feast_materialize_seconds": 0})
    deployer = build_deployer(base.model_copy(update={"service_name": "deployer"}))
    serving = build_serving(
        base.model_copy(update={"service_name": "serving", "serving_models": ",".join(models.values())})
    )
    await deployer.start()
    await serving.start()
    try:
        for policy, model in models.items():
            rollout = SPEC.rollout.model_copy(update={"bake_seconds": 0, "min_samples": 1})
            spec = SPEC.model_copy(update={"model": model, "dataset": model, "rollout": rollout})
            await publish(
                base,
                ModelSpecApplied(
                    model=model, revision=1, spec=spec, spec_yaml="-", spec_sha256="0" * 64, applied_by="it"
                ),
            )
            await register(base, model, 1, outcomes[policy])
            await changes(base, model, 1)

        async def live() -> bool:
            return all(m in serving.host.live for m in models.values())

        await eventually(live, timeout=60, what="the Feast models live in serving")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=serving.api), base_url="http://serving", timeout=30
        ) as http:
            yield Served(serving, http, base, models, outcomes)
    finally:
        await serving.stop()
        await deployer.stop()


@pytest.fixture(scope="module")
def outcomes(example_repo: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, fit.Outcome]:
    """The example trained twice: missing entities refused, or imputed."""
    folder = tmp_path_factory.mktemp("feast-models")
    found = {}
    for policy in ("reject", "impute"):
        spec = SPEC.model_copy(update={"feast": SPEC.feast.model_copy(update={"on_missing": policy})})  # type: ignore[union-attr]
        found[policy] = train(spec, dataset, example_repo, folder / policy)
    return found


@pytest.fixture
async def served(settings: Settings, example_repo: Path, outcomes: dict[str, fit.Outcome]) -> AsyncIterator[Served]:
    async with serving_of(settings, example_repo, outcomes) as found:
        yield found


def by_key(count: int, *, start: int = 0) -> list[dict[str, Any]]:
    """Requests with the entity key and the two inline features only."""
    plans = ["basic", "plus", "pro"]
    return [
        {"customer_id": f"c{i:05d}", "plan": plans[i % 3], "monthly_charges": 30.0 + (i % 50)}
        for i in range(start, start + count)
    ]


def in_process(outcome: fit.Outcome, rows: list[dict[str, Any]]) -> np.ndarray[Any, Any]:
    """The trained pipeline's probabilities for complete rows, here, without serving."""
    pipeline = load_model(Path(outcome.files["model.skops"]))
    frame = prepare(pd.DataFrame(rows), SPEC.features)
    found: np.ndarray[Any, Any] = pipeline.predict_proba(frame)
    return found


async def test_serving_by_key_alone_answers_what_the_pipeline_answers_fed_the_online_values(
    served: Served, example_repo: Path
) -> None:
    model = served.models["reject"]
    rows = by_key(40) + by_key(3)  # three customers twice: looked up once each, answered twice
    answer = await served.http.post(f"/v1/models/{model}:predict", json={"instances": rows})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    online = (
        feast.open_store(example_repo)
        .get_online_features(
            features=SPEC.feast_refs(),
            entity_rows=[{"customer_id": r["customer_id"]} for r in rows],
            full_feature_names=True,
        )
        .to_dict()
    )
    complete = [
        {**row, **{ref: online[ref.replace(":", "__")][i] for ref in SPEC.feast_refs()}} for i, row in enumerate(rows)
    ]
    expected = in_process(served.outcomes["reject"], complete)
    got = np.array([[p["probabilities"]["0"], p["probabilities"]["1"]] for p in predictions])
    assert np.allclose(got, expected, atol=1e-4)
    # Fed the same values inline, serving skips the lookup and answers the same.
    inline = await served.http.post(f"/v1/models/{model}:predict", json={"instances": complete})
    assert [p["prediction"] for p in inline.json()["predictions"]] == [p["prediction"] for p in predictions]
    # What the model saw is logged: drift and the label join see the looked-up features.
    ids = {p["request_id"] for p in predictions}

    async def logged() -> bool:
        batches = await on_topic(served.settings, topics.PREDICTIONS_LOGGED, model)
        return any(ids & set(b.request_id) for b in batches)

    await eventually(logged, timeout=30, what="the predictions logged")
    batches: list[PredictionsLogged] = await on_topic(served.settings, topics.PREDICTIONS_LOGGED, model)
    first = next(b for b in batches if predictions[0]["request_id"] in b.request_id)
    row = first.request_id.index(predictions[0]["request_id"])
    assert first.features["customer_activity:logins_7d"][row] == complete[0]["customer_activity:logins_7d"]
    metrics = (await served.http.get("/metrics")).text
    assert f'modelbus_serving_feature_lookup_seconds_count{{model="{model}"}}' in metrics


async def test_a_missing_entity_is_refused_naming_it_or_imputed_as_in_training(served: Served) -> None:
    rows = [*by_key(2), {"customer_id": "nobody", "plan": "pro", "monthly_charges": 70.0}]
    refused = await served.http.post(
        f"/v1/models/{served.models['reject']}:predict", json={"instances": [*rows, rows[2]]}
    )
    assert refused.status_code == 422, refused.text
    detail = str(refused.json())
    assert "customer_id='nobody'" in detail and "customer_activity:" in detail and "NOT_FOUND" in detail
    assert "instances[2]" in detail and "instances[3]" in detail and "instances[0]" not in detail
    imputed = await served.http.post(f"/v1/models/{served.models['impute']}:predict", json={"instances": rows})
    assert imputed.status_code == 200, imputed.text
    got = imputed.json()["predictions"][2]["probabilities"]
    blank = {**rows[2], **{ref: math.nan for ref in SPEC.feast_refs()}}
    expected = in_process(served.outcomes["impute"], [blank])[0]
    assert np.allclose([got["0"], got["1"]], expected, atol=1e-4)
    no_key = await served.http.post(
        f"/v1/models/{served.models['impute']}:predict", json={"instances": [{"plan": "pro", "monthly_charges": 70.0}]}
    )
    assert no_key.status_code == 422 and "'customer_id'" in no_key.text


# ---------------------------------------------------------------- the online store cut off


def postgres_repo(folder: Path, settings: Settings) -> Path:
    """The example repo with its online store in PostgreSQL, reached through toxiproxy."""
    repo = folder / "pg-repo"
    feast_ops.set_up_example(repo, quiet)
    schema = f"feast_{uuid.uuid4().hex[:8]}"
    (repo / "feature_store.yaml").write_text(
        "project: modelbus\nprovider: local\nregistry: data/registry.db\n"
        "online_store:\n  type: postgres\n  host: 127.0.0.1\n"
        f"  port: {ONLINE_PROXY}\n  database: modelbus\n  db_schema: {schema}\n"
        "  user: modelbus\n  password: modelbus\n  sslmode: disable\n  conn_type: pool\n  min_conn: 1\n  max_conn: 4\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
    return repo


async def test_an_online_store_cut_off_mid_load_answers_503_with_the_reason_then_recovers(
    settings: Settings, outcomes: dict[str, fit.Outcome], tmp_path: Path
) -> None:
    toxiproxy = Toxiproxy(tmp_path)
    toxiproxy.start()
    try:
        toxiproxy.proxy("feast-online", ONLINE_PROXY, POSTGRES_PORT)
        repo = postgres_repo(tmp_path, settings)
        await asyncio.to_thread(feast_ops.apply, repo, quiet, example=False)
        async with serving_of(settings, repo, {"reject": outcomes["reject"]}) as served:
            model = served.models["reject"]
            seen: list[tuple[float, int, str]] = []
            loop = asyncio.get_running_loop()
            began = loop.time()

            async def load(worker: int) -> None:
                i = 0
                while loop.time() - began < 9.0:
                    answer = await served.http.post(
                        f"/v1/models/{model}:predict", json={"instances": by_key(2, start=(worker * 97 + i) % 1500)}
                    )
                    seen.append((loop.time() - began, answer.status_code, answer.text))
                    i += 1
                    await asyncio.sleep(0.02)

            async def cut() -> None:
                await asyncio.sleep(2.0)
                await toxiproxy.enable("feast-online", False)
                await asyncio.sleep(3.0)
                await toxiproxy.enable("feast-online", True)

            await asyncio.gather(cut(), *(load(w) for w in range(4)))
            codes = {code for _, code, _ in seen}
            assert codes <= {200, 503}, {code: text for _, code, text in seen if code not in (200, 503)}
            down = [text for t, code, text in seen if code == 503]
            assert down, "no request saw the online store away"
            assert all("online store cannot answer" in text for text in down)
            assert all(t > 2.0 for t, code, _ in seen if code == 503)
            after = [code for t, code, _ in seen if t > 7.5]
            assert after and set(after) == {200}, "serving did not recover once the store was back"
            assert (await served.http.get("/health")).status_code == 200
    finally:
        toxiproxy.stop()


# ---------------------------------------------------------------- materialization


async def test_the_deployer_materializes_new_snapshots_on_its_schedule_in_a_span_of_its_own(
    settings: Settings, tmp_path: Path
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    from services.deployer.materialize import Materializer

    repo = tmp_path / "repo"
    await asyncio.to_thread(feast_ops.apply, repo, quiet, example=True)  # materialized up to now
    source = repo / feast_ops.EXAMPLE_SOURCE
    snapshots = pd.read_parquet(source)
    fresh = snapshots[snapshots["customer_id"] == "c00001"].tail(1).copy()
    now = pd.Timestamp.now(tz="UTC")
    fresh["event_timestamp"], fresh["created"], fresh["logins_7d"] = now, now, 999
    pd.concat([snapshots, fresh]).to_parquet(source, index=False)
    lookup = feast.Lookup(repo, ["customer_activity:logins_7d"], "customer_id")
    assert lookup(["c00001"])[0]["customer_activity:logins_7d"] != [999]  # not online yet

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    materializer = Materializer.of(
        settings.model_copy(update={"feast_repo": repo}), provider.get_tracer("test"), CollectorRegistry()
    )
    assert await materializer.once() == ["customer_activity"]
    assert lookup(["c00001"])[0]["customer_activity:logins_7d"] == [999]
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "feast materialize-incremental"]
    assert span.attributes is not None and list(span.attributes["feast.views"]) == ["customer_activity"]
    assert span.attributes["feast.repo"] == str(repo)
    # No repo, no run (and no failure).
    nowhere = Materializer.of(
        settings.model_copy(update={"feast_repo": tmp_path / "none"}), provider.get_tracer("test"), CollectorRegistry()
    )
    assert await nowhere.once() is None


def test_a_feast_spec_on_a_platform_without_a_feast_repo_is_a_spec_error_naming_the_setting(tmp_path: Path) -> None:
    from shared.contract.specparse import SpecError
    from shared.runtime.specfile import load_spec_checked

    text = (ROOT / "schemas/examples/model-spec-feast.yaml").read_text()
    with pytest.raises(SpecError) as refused:
        load_spec_checked(text, tmp_path / "nothing-here")
    (issue,) = refused.value.issues
    assert issue.path == "feast" and "MODELBUS_FEAST_REPO" in issue.message and "no feature_store.yaml" in issue.message
