"""The deployer and serving against the real Kafka, PostgreSQL and S3 server.

Two real models (a logistic regression and a random forest trained on the example data) are
registered as versions 1 and 2 of a fresh model per test; the deployer rolls them out and serving
answers requests from whatever the rollout routes to.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.deployer import store as deployer_store
from services.deployer.app import Deployer
from services.deployer.app import build as build_deployer
from services.deployer.domain import audited_as
from services.deployer.serving.app import Serving
from services.deployer.serving.app import build as build_serving
from services.registry.store import SqlStore as RegistryStore
from services.trainer import fit
from shared.contract import topics
from shared.contract.envelope import decode, encode
from shared.contract.events import (
    ArtifactRef,
    CanaryAnalyzed,
    DeadLettered,
    Event,
    ModelEvaluated,
    ModelRegistered,
    ModelSpecApplied,
    PredictionsLogged,
    RolloutChanged,
    RolloutCommanded,
    TrafficShare,
)
from shared.contract.spec import ModelSpec
from shared.ops.example_data import churn_frame, write_churn
from shared.ops.tools import read_all
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec
from tests.integration.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())
FEATURES = ["tenure_months", "monthly_charges", "support_calls", "plan", "region"]


def one_candidate(index: int) -> ModelSpec:
    """The example spec with only its `index`-th candidate and no search."""
    candidate = EXAMPLE.candidates[index].model_copy(update={"search": {}})
    return EXAMPLE.model_copy(update={"candidates": [candidate]})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[int, fit.Outcome]:
    """Version 1: logistic regression; version 2: random forest (both with ONNX)."""
    folder = tmp_path_factory.mktemp("deployer")
    data = write_churn(folder / "churn.csv", rows=2000)
    outcomes = {}
    for version, index in ((1, 0), (2, 1)):
        spec = one_candidate(index)
        job = fit.Job(f"r{version}", spec, str(data), "csv", "0" * 64, str(folder / f"v{version}"), "t")
        outcomes[version] = fit.train(job)
        assert outcomes[version].ok and "model.onnx" in outcomes[version].files
    return outcomes


@pytest.fixture
def model() -> str:
    """The test's model: the database is shared between tests, so each test serves only its own."""
    return f"churn-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def deploy_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"otlp_endpoint": None, "serving_refresh_seconds": 30.0})


@pytest.fixture
async def platform(deploy_settings: Settings, model: str) -> AsyncIterator[tuple[Deployer, Serving]]:
    deployer = build_deployer(deploy_settings.model_copy(update={"service_name": "deployer"}))
    serving = build_serving(deploy_settings.model_copy(update={"service_name": "serving", "serving_models": model}))
    await deployer.start()
    await serving.start()
    yield deployer, serving
    await serving.stop()
    await deployer.stop()


async def publish(settings: Settings, *events: Event) -> list[str]:
    bus = Bus(settings.model_copy(update={"service_name": "it-producer"}))
    await bus.start()
    try:
        return [await bus.publish(e) for e in events]
    finally:
        await bus.stop()


async def on_topic(settings: Settings, topic: str, model: str) -> list[Any]:
    found = [decode(r.value, list(r.headers)).event for r in await read_all(settings, topic)]
    return [e for e in found if getattr(e, "model", None) == model]


async def changes(settings: Settings, model: str, count: int, *, timeout: float = 45) -> list[RolloutChanged]:
    """Wait until the model has at least `count` RolloutChanged; returns them in order."""

    async def enough() -> bool:
        return len(await on_topic(settings, topics.ROLLOUT_CHANGED, model)) >= count

    await eventually(enough, timeout=timeout, what=f"{count} RolloutChanged for {model}")
    found = await on_topic(settings, topics.ROLLOUT_CHANGED, model)
    return sorted(found, key=lambda e: e.occurred_at)


async def register(
    settings: Settings,
    model: str,
    version: int,
    outcome: fit.Outcome,
    *,
    decision: str = "approved",
    tamper: bool = False,
) -> None:
    """Upload a version's artifacts, then announce it registered and evaluated.

    `tamper`: the model file recorded with a digest its bytes do not have.
    """
    artifacts = ArtifactStore(settings)
    refs = []
    for name in ("model.onnx", "model.skops", "manifest.json"):
        stored = await asyncio.to_thread(artifacts.put_file, f"{model}/v{version}/{name}", Path(outcome.files[name]))
        digest = "ab" * 32 if tamper and name == "model.onnx" else stored.sha256
        refs.append(ArtifactRef(name=name, uri=stored.uri, sha256=digest, size_bytes=stored.size_bytes))
    registered = ModelRegistered(
        model=model,
        version=version,
        run_id=outcome.run_id,
        dataset_version="v1",
        task="classification",
        artifacts=refs,
        metrics=outcome.metrics,
    )
    evaluated = ModelEvaluated(
        model=model,
        version=version,
        champion_version=None,
        passed=decision != "rejected",
        decision=decision,  # type: ignore[arg-type]
        gates=[],
        metrics=outcome.metrics,
        test_rows=400,
    )
    await publish(settings, registered, evaluated)


async def apply(settings: Settings, model: str, **rollout: Any) -> ModelSpec:
    policy = EXAMPLE.rollout.model_copy(update={"bake_seconds": 0, "min_samples": 1, **rollout})
    spec = EXAMPLE.model_copy(update={"model": model, "dataset": model, "rollout": policy})
    await publish(
        settings,
        ModelSpecApplied(model=model, revision=1, spec=spec, spec_yaml="-", spec_sha256="0" * 64, applied_by="it"),
    )
    return spec


async def live_state(serving: Serving, model: str, state: str, *, candidate: int | None = None) -> None:
    async def there() -> bool:
        live = serving.host.live.get(model)
        return live is not None and live.rollout.state == state and candidate in (None, live.rollout.candidate)

    await eventually(there, timeout=45, what=f"serving to see {model} {state}")


async def canary_of_v2(
    settings: Settings, serving: Serving, trained: dict[int, fit.Outcome], model: str, **rollout: Any
) -> tuple[str, list[RolloutChanged]]:
    """`model` with version 1 promoted and version 2 approved; returns its RolloutChanged so far."""
    await apply(settings, model, **rollout)
    await register(settings, model, 1, trained[1])
    await changes(settings, model, 1)
    await register(settings, model, 2, trained[2])
    moves = await changes(settings, model, 2)
    await live_state(serving, model, moves[-1].to_state, candidate=2)
    return model, moves


def rows(count: int, *, seed: int = 1, region: str | None = None) -> list[dict[str, Any]]:
    frame = churn_frame(count, seed=seed)
    rng = random.Random(seed)
    out = []
    for record in frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None).to_dict("records"):
        record["customer_id"] = f"c-{rng.randrange(10**12)}"
        if region is not None:
            record["region"] = region
        out.append(record)
    return out


def client(serving: Serving) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=serving.api), base_url="http://serving", timeout=30)


async def predict_batch(http: httpx.AsyncClient, model: str, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = await http.post(f"/v1/models/{model}:predict", json={"instances": batch})
    assert answer.status_code == 200, answer.text
    predictions: list[dict[str, Any]] = answer.json()["predictions"]
    return predictions


async def test_an_approved_version_goes_canary_at_ten_percent_split_sticky_with_excluded_segments(
    platform: tuple[Deployer, Serving], deploy_settings: Settings, trained: dict[int, fit.Outcome], model: str
) -> None:
    _, serving = platform
    model, moves = await canary_of_v2(deploy_settings, serving, trained, model)
    first, canary = moves
    assert (first.candidate_version, first.to_state, first.stable_version) == (1, "promoted", None)
    assert (canary.candidate_version, canary.stable_version, canary.from_state, canary.to_state) == (
        2,
        1,
        "pending",
        "canary",
    )
    assert [(s.version, s.percent, s.role) for s in canary.traffic] == [(1, 90, "stable"), (2, 10, "canary")]
    assert canary.causation_id is not None

    async with client(serving) as http:
        keyed = rows(10_000, seed=3)
        chosen: dict[str, int] = {}
        for start in range(0, len(keyed), 500):
            batch = keyed[start : start + 500]
            for row, answer in zip(batch, await predict_batch(http, model, batch), strict=True):
                chosen[row["customer_id"]] = answer["version"]
                assert set(answer["probabilities"]) == {"0", "1"} and answer["prediction"] in (0, 1)
        share = Counter(chosen.values())[2] / len(chosen)
        assert abs(share - 0.10) <= 0.02, f"canary share {share:.3f}, target 0.10"

        # The same keys again, in other batches and one by one: each sees the version it saw first.
        shuffled = random.Random(9).sample(keyed, len(keyed))
        for start in range(0, len(shuffled), 1000):
            again = await predict_batch(http, model, shuffled[start : start + 1000])
            assert [a["version"] for a in again] == [chosen[r["customer_id"]] for r in shuffled[start : start + 1000]]
        for row in keyed[:100]:
            single = await http.post(f"/v1/models/{model}:predict", json={"instance": row})
            assert single.status_code == 200 and single.json()["version"] == chosen[row["customer_id"]]
            assert single.json()["request_id"] == single.headers["x-request-id"]

        # An excluded segment always gets the stable version, whatever its key.
        excluded = await predict_batch(http, model, rows(1000, seed=4, region="eu-central"))
        assert {a["version"] for a in excluded} == {1}

        described = (await http.get(f"/v1/models/{model}")).json()
        assert described["state"] == "canary" and [v["runtime"] for v in described["versions"]] == ["onnx", "onnx"]
        assert (await http.get("/readyz")).status_code == 200

        tagged = await http.post(
            f"/v1/models/{model}:predict", json={"instance": keyed[0]}, headers={"x-request-id": "req-tagged-1"}
        )
        assert tagged.json()["request_id"] == "req-tagged-1"

    async def logged() -> bool:
        batches = await on_topic(deploy_settings, topics.PREDICTIONS_LOGGED, model)
        ids = {p.request_id: p for b in batches for p in b.records()}
        return "req-tagged-1" in ids

    await eventually(logged, timeout=30, what="the tagged prediction on the predictions topic")
    batches = await on_topic(deploy_settings, topics.PREDICTIONS_LOGGED, model)
    assert all(isinstance(b, PredictionsLogged) for b in batches)
    # A canary request is also scored by the stable version (role shadow, the same request id): the
    # answered rows are the others.
    logged_rows = {p.request_id: p for b in batches for p in b.records() if p.role != "shadow"}
    shadowed = {p.request_id for b in batches for p in b.records() if p.role == "shadow"}
    assert shadowed and shadowed <= {i for i, p in logged_rows.items() if p.model_version == 2}
    tagged_row = logged_rows["req-tagged-1"]
    assert tagged_row.model_version == chosen[keyed[0]["customer_id"]]
    assert tagged_row.sticky_key == keyed[0]["customer_id"] and set(tagged_row.features) == set(FEATURES)
    assert len(logged_rows) >= 10_000 + 10_000 + 100 + 1000


async def test_a_bad_request_is_refused_naming_every_field(
    platform: tuple[Deployer, Serving], deploy_settings: Settings, trained: dict[int, fit.Outcome], model: str
) -> None:
    _, serving = platform
    model, _ = await canary_of_v2(deploy_settings, serving, trained, model)
    good = rows(3)
    broken = [
        {**good[0], "tenure_months": "twelve"},
        {k: v for k, v in good[1].items() if k != "plan"},
        {**good[2], "region": ["north"], "support_calls": True},
    ]
    async with client(serving) as http:
        answer = await http.post(f"/v1/models/{model}:predict", json={"instances": broken})
        assert answer.status_code == 422
        errors = answer.json()["detail"]
        assert "instances[0].tenure_months: expected a number, got string" in errors
        assert "instances[1].plan: required" in errors
        assert "instances[2].region: expected a string, got array" in errors
        assert "instances[2].support_calls: expected a number, got boolean" in errors
        assert (await http.post(f"/v1/models/{model}:predict", content=b"{not json")).status_code == 400
        assert (await http.post(f"/v1/models/{model}:predict", json={"rows": []})).status_code == 422
        unknown = await http.post("/v1/models/no-such-model:predict", json={"instance": good[0]})
        assert unknown.status_code == 404 and "no-such-model" in unknown.json()["detail"]
        huge = await http.post(f"/v1/models/{model}:predict", json={"instances": [good[0]] * 1001})
        assert huge.status_code == 413
        # Missing numbers are allowed (the pipeline imputes them); the server keeps answering.
        fine = await http.post(f"/v1/models/{model}:predict", json={"instance": {**good[0], "tenure_months": None}})
        assert fine.status_code == 200


async def test_hot_swaps_under_concurrent_load_fail_no_request_and_end_promoted(
    platform: tuple[Deployer, Serving], deploy_settings: Settings, trained: dict[int, fit.Outcome], model: str
) -> None:
    _, serving = platform
    model, moves = await canary_of_v2(deploy_settings, serving, trained, model)
    rollout_id = moves[-1].rollout_id
    statuses: Counter[int] = Counter()
    versions: Counter[int] = Counter()
    stop = asyncio.Event()
    pool = rows(400, seed=5)

    async def load(worker: int) -> None:
        async with client(serving) as http:
            i = worker
            while not stop.is_set():
                answer = await http.post(f"/v1/models/{model}:predict", json={"instance": pool[i % len(pool)]})
                statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    versions[answer.json()["version"]] += 1
                i += 8

    workers = [asyncio.create_task(load(w)) for w in range(8)]
    now = datetime.now(UTC)
    for step in range(4):  # 10 → 25 → 50 → 100 → promoted
        await publish(
            deploy_settings,
            CanaryAnalyzed(
                model=model,
                rollout_id=rollout_id,
                candidate_version=2,
                stable_version=1,
                verdict="advance",
                comparisons=[],
                candidate_samples=500,
                stable_samples=500,
                window_start=now,
                window_end=now,
                reason=f"healthy at step {step}",
            ),
        )
        await changes(deploy_settings, model, 3 + step)
        await asyncio.sleep(0.5)
    await live_state(serving, model, "promoted")
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*workers)

    assert set(statuses) == {200}, statuses
    assert statuses[200] > 200 and versions[1] > 0 and versions[2] > 0
    moves = await changes(deploy_settings, model, 6)
    assert [m.to_state for m in moves] == ["promoted", "canary", "canary", "canary", "canary", "promoted"]
    assert [m.traffic[-1].percent for m in moves[1:]] == [10, 25, 50, 100, 100]
    assert moves[2].evidence["candidate_samples"] == 500 and moves[2].reason == "healthy at step 0"
    async with client(serving) as http:
        after = await predict_batch(http, model, rows(200, seed=6))
        assert {a["version"] for a in after} == {2}


async def test_an_operator_rollback_puts_all_traffic_on_the_previous_champion_and_nonsense_is_refused(
    platform: tuple[Deployer, Serving], deploy_settings: Settings, trained: dict[int, fit.Outcome], model: str
) -> None:
    deployer, serving = platform
    model, moves = await canary_of_v2(deploy_settings, serving, trained, model)
    command = RolloutCommanded(model=model, command="pause", actor="olga", reason="looking into it")
    await publish(deploy_settings, await audited(deployer, command))
    await changes(deploy_settings, model, 3)
    nonsense = [
        await audited(deployer, RolloutCommanded(model=model, command="promote", actor="pete")),  # paused by olga
        await audited(deployer, RolloutCommanded(model=model, command="start", version=9, actor="pete")),  # unknown
    ]
    ids = await publish(deploy_settings, *nonsense)
    # Weights outside 0-100 never reach the deployer's logic: the event itself is invalid.
    bad = RolloutCommanded.model_construct(
        model=model,
        command="set-weights",
        actor="pete",
        traffic=[TrafficShare.model_construct(version=1, percent=-20, role="stable")],
        version=None,
        reason="",
    )
    message = encode(bad, source="/it")
    bus = Bus(deploy_settings.model_copy(update={"service_name": "it-producer"}))
    await bus.start()
    await bus.publish_raw(deploy_settings.topic(topics.ROLLOUT_COMMANDED), message.key, message.value, message.headers)
    await bus.stop()

    async def three_letters() -> bool:
        letters = await on_topic_letters(deploy_settings)
        return len([d for d in letters if d.consumer.endswith("deployer")]) >= 3

    await eventually(three_letters, timeout=45, what="three dead letters from the deployer")
    letters = {d.original_event_id: d for d in await on_topic_letters(deploy_settings)}
    assert "paused by olga" in letters[ids[0]].reason
    assert "not a registered version" in letters[ids[1]].reason
    assert "percent" in letters[message.event_id].reason
    async with deployer.sessions() as session:
        logged = {
            r.event_id: r
            for r in await session.scalars(
                select(deployer_store.CommandRow).where(deployer_store.CommandRow.model == model)
            )
        }
    assert logged[ids[0]].outcome == "refused" and "paused by olga" in logged[ids[0]].reason
    assert logged[ids[1]].outcome == "refused"
    assert len(await on_topic(deploy_settings, topics.ROLLOUT_CHANGED, model)) == 3, "a refusal changes nothing"

    rollback = RolloutCommanded(model=model, command="rollback", actor="olga", reason="bad")
    await publish(deploy_settings, await audited(deployer, rollback))
    moves = await changes(deploy_settings, model, 4)
    last = moves[-1]
    assert (last.from_state, last.to_state, last.actor) == ("paused", "rolled-back", "olga")
    assert [(s.version, s.percent) for s in last.traffic] == [(1, 100)]
    await live_state(serving, model, "rolled-back")
    async with client(serving) as http:
        assert {a["version"] for a in await predict_batch(http, model, rows(1000, seed=7))} == {1}


async def audited(deployer: Deployer, command: RolloutCommanded) -> RolloutCommanded:
    """The command as the registry's API issues it: after the audit entry it names."""
    action, target = audited_as(command)
    async with deployer.sessions() as session, session.begin():
        entry = await RegistryStore(session).audit(
            actor=command.actor, role="operator", action=action, target=target, reason=command.reason
        )
    return command.model_copy(update={"audit_id": entry})


async def on_topic_letters(settings: Settings) -> list[DeadLettered]:
    found = [decode(r.value, list(r.headers)).event for r in await read_all(settings, topics.DEAD_LETTER)]
    return [e for e in found if isinstance(e, DeadLettered)]


async def test_shadow_mode_never_returns_the_candidates_answer_but_logs_it(
    platform: tuple[Deployer, Serving], deploy_settings: Settings, trained: dict[int, fit.Outcome], model: str
) -> None:
    _, serving = platform
    model, moves = await canary_of_v2(deploy_settings, serving, trained, model, shadow=True)
    assert moves[-1].to_state == "shadow"
    assert [(s.version, s.percent, s.role) for s in moves[-1].traffic] == [(1, 100, "stable"), (2, 0, "shadow")]
    sent = rows(500, seed=8)
    async with client(serving) as http:
        answers = await predict_batch(http, model, sent)
    assert {(a["version"], a["role"]) for a in answers} == {(1, "stable")}
    # Excluded segments never reach the candidate, not even as a copy.
    ids = {a["request_id"] for a, r in zip(answers, sent, strict=True) if r["region"] != "eu-central"}
    kept_out = {a["request_id"] for a, r in zip(answers, sent, strict=True) if r["region"] == "eu-central"}
    assert len(ids) > 300 and kept_out

    async def shadowed() -> bool:
        batches = await on_topic(deploy_settings, topics.PREDICTIONS_LOGGED, model)
        return len({p.request_id for b in batches for p in b.records() if p.role == "shadow"} & ids) == len(ids)

    await eventually(shadowed, timeout=30, what="shadow predictions on the predictions topic")
    batches = await on_topic(deploy_settings, topics.PREDICTIONS_LOGGED, model)
    roles = Counter((p.model_version, p.role) for b in batches for p in b.records() if p.request_id in ids)
    assert roles == {(1, "stable"): len(ids), (2, "shadow"): len(ids)}
    assert not [p for b in batches for p in b.records() if p.request_id in kept_out and p.role == "shadow"]


async def test_a_newer_approved_version_supersedes_the_running_canary(
    platform: tuple[Deployer, Serving], deploy_settings: Settings, trained: dict[int, fit.Outcome], model: str
) -> None:
    _, serving = platform
    model, moves = await canary_of_v2(deploy_settings, serving, trained, model)
    await register(deploy_settings, model, 3, trained[1])
    moves = await changes(deploy_settings, model, 4)
    superseded, started = moves[2:]
    assert (superseded.candidate_version, superseded.to_state) == (2, "superseded")
    assert [(s.version, s.percent) for s in superseded.traffic] == [(1, 100)]
    assert (started.candidate_version, started.stable_version, started.to_state) == (3, 1, "canary")
    assert "version 3" in superseded.reason
    await live_state(serving, model, "canary", candidate=3)
    # A late approval of an older version changes nothing.
    await register(deploy_settings, model, 2, trained[2])
    await asyncio.sleep(2)
    assert len(await on_topic(deploy_settings, topics.ROLLOUT_CHANGED, model)) == 4


async def test_a_version_whose_artifact_fails_its_digest_is_never_loaded_and_stable_keeps_serving(
    platform: tuple[Deployer, Serving], deploy_settings: Settings, trained: dict[int, fit.Outcome], model: str
) -> None:
    _, serving = platform
    await apply(deploy_settings, model)
    await register(deploy_settings, model, 1, trained[1])
    await changes(deploy_settings, model, 1)
    await live_state(serving, model, "promoted")
    await register(deploy_settings, model, 2, trained[2], tamper=True)
    await changes(deploy_settings, model, 2)

    async def refused() -> bool:
        return model in serving.host.problems

    await eventually(refused, timeout=30, what="serving to refuse the tampered version")
    async with client(serving) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded", "it still answers for the model"
        assert any(f"{model}@2" in p and "SHA-256" in p for p in ready.json()["problems"]), ready.text
        answers = await predict_batch(http, model, rows(1000, seed=10))
        assert {a["version"] for a in answers} == {1}, "the previous routing stays in place"
        metrics = (await http.get("/metrics")).text
    assert f'modelbus_serving_load_failures_total{{model="{model}"}}' in metrics
    assert f'modelbus_serving_predictions_total{{model="{model}",role="stable",version="1"}}' in metrics
