"""The registry against the real Kafka and PostgreSQL: numbering, redelivery, lineage, aliases, auth."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import SecretStr
from sqlalchemy import select

from services.registry import tables as store
from services.registry.app import Registry, build
from shared.contract import topics
from shared.contract.envelope import decode
from shared.contract.events import (
    AlertRaised,
    DataArrived,
    DriftDetected,
    Event,
    ModelEvaluated,
    ModelRegistered,
    ModelSpecApplied,
    ModelTrained,
    RolloutChanged,
    TrainingStarted,
)
from shared.contract.schemas import kebab
from shared.ops.tools import read_all, read_dead_letters
from shared.runtime.bus import Bus
from shared.runtime.httpapi import RoleCheck
from shared.runtime.settings import Settings
from tests.integration.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]
E = TypeVar("E", bound=Event)
TOKENS = "adm-token=admin:alice,op-token=operator:olga,view-token=viewer:victor"
AS = {
    "admin": {"Authorization": "Bearer adm-token"},
    "operator": {"Authorization": "Bearer op-token"},
    "viewer": {"Authorization": "Bearer view-token"},
}


def example(cls: type[E], **fields: Any) -> E:
    """A valid event from schemas/examples with some fields replaced."""
    data = json.loads((ROOT / f"schemas/examples/{kebab(cls.event_type)}.json").read_text())
    return cls.model_validate({**data, **fields})


def trained(model: str, run: str, *, dataset_version: str = "v1") -> ModelTrained:
    return example(
        ModelTrained, model=model, run_id=run, dataset="churn", dataset_version=dataset_version, spec_revision=1
    )


@pytest.fixture
def registry_settings(settings: Settings) -> Settings:
    update = {"api_tokens": SecretStr(TOKENS), "otlp_endpoint": None, "service_name": "registry"}
    return settings.model_copy(update=update)


@pytest.fixture
async def registries(registry_settings: Settings) -> AsyncIterator[Callable[..., Awaitable[Registry]]]:
    """Start registry instances (consumers, relay, cache listener); all are stopped after the test."""
    started: list[Registry] = []

    async def start(group: str = "registry") -> Registry:
        registry = build(registry_settings, group=group)
        await registry.start()
        started.append(registry)
        return registry

    yield start
    for registry in reversed(started):
        await registry.stop()


@pytest.fixture
async def publisher(registry_settings: Settings) -> AsyncIterator[Bus]:
    bus = Bus(registry_settings.model_copy(update={"service_name": "it-producer"}))
    await bus.start()
    yield bus
    await bus.stop()


def client(registry: Registry) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=registry.api), base_url="http://registry")


async def versions_of(registry: Registry, model: str) -> list[tuple[int, str]]:
    async with registry.sessions() as session:
        rows = await session.execute(
            select(store.VersionRow.version, store.VersionRow.run_id)
            .where(store.VersionRow.model == model)
            .order_by(store.VersionRow.version)
        )
        return list(rows.all())


async def registered_events(settings: Settings, model: str) -> list[ModelRegistered]:
    found = [decode(r.value, list(r.headers)).event for r in await read_all(settings, topics.MODEL_REGISTERED)]
    return [e for e in found if isinstance(e, ModelRegistered) and e.model == model]


async def test_fifty_concurrent_trainings_through_two_registries_get_versions_one_to_fifty(
    registries: Callable[..., Awaitable[Registry]], publisher: Bus, registry_settings: Settings
) -> None:
    # Two instances in different groups both receive every event, the worst case of a zombie
    # instance after a rebalance: each registration races against the other's.
    first = await registries(group="registry-a")
    await registries(group="registry-b")
    model = f"m-{uuid.uuid4().hex[:8]}"
    events = [trained(model, f"{model}-run-{i}") for i in range(50)]
    ids = await asyncio.gather(*(publisher.publish(e) for e in events))

    async def all_registered() -> bool:
        return (
            len(await versions_of(first, model)) == 50 and len(await registered_events(registry_settings, model)) >= 50
        )

    await eventually(all_registered, timeout=90, what="50 versions")
    versions = await versions_of(first, model)
    assert [v for v, _ in versions] == list(range(1, 51)), "no gap, no duplicate"
    assert sorted(run for _, run in versions) == sorted(e.run_id for e in events), "each run exactly once"
    announced = await registered_events(registry_settings, model)
    assert sorted(e.version for e in announced) == list(range(1, 51)), "one ModelRegistered per version"

    # Redelivery of the same message, and the same run under a new event id: nothing new.
    await publisher.publish(events[7], event_id=ids[7])
    await publisher.publish(events[7])
    await asyncio.sleep(3)
    assert len(await versions_of(first, model)) == 50
    assert len(await registered_events(registry_settings, model)) == 50


async def test_a_dataset_version_republished_with_another_digest_is_dead_lettered_with_the_reason(
    registries: Callable[..., Awaitable[Registry]], publisher: Bus, registry_settings: Settings
) -> None:
    registry = await registries()
    name = f"d-{uuid.uuid4().hex[:8]}"
    original = example(DataArrived, dataset=name, version="2026-11-01", sha256="a" * 64)
    await publisher.publish(original)
    await publisher.publish(example(DataArrived, dataset=name, version="2026-11-01", sha256="a" * 64))
    tampered_id = await publisher.publish(example(DataArrived, dataset=name, version="2026-11-01", sha256="b" * 64))

    async def dead_lettered() -> bool:
        return any(item.letter.original_event_id == tampered_id for item in await read_dead_letters(registry_settings))

    await eventually(dead_lettered, what="the tampered dataset version in the dead-letter topic")
    letter = next(
        i.letter for i in await read_dead_letters(registry_settings) if i.letter.original_event_id == tampered_id
    )
    assert "already recorded with sha256 " + "a" * 64 in letter.reason and "b" * 64 in letter.reason
    async with client(registry) as http:
        kept = (await http.get(f"/v1/datasets/{name}/2026-11-01", headers=AS["viewer"])).json()
    assert kept["sha256"] == "a" * 64


async def test_lineage_returns_the_whole_chain_and_the_champion_moves_with_promotion_and_rollback(
    registries: Callable[..., Awaitable[Registry]], publisher: Bus
) -> None:
    registry = await registries()
    model = f"m-{uuid.uuid4().hex[:8]}"
    async with client(registry) as http:
        spec_yaml = (ROOT / "schemas/examples/model-spec.yaml").read_text().replace("model: churn", f"model: {model}")
        applied = await http.post("/v1/specs", json={"spec_yaml": spec_yaml}, headers=AS["admin"])
        assert applied.status_code == 200, applied.text

        await publisher.publish(example(DataArrived, dataset="churn", version=f"{model}-data", sha256="c" * 64))
        await publisher.publish(
            example(
                TrainingStarted, model=model, run_id=f"{model}-r1", dataset="churn", dataset_version=f"{model}-data"
            )
        )
        for n in (1, 2):
            await publisher.publish(trained(model, f"{model}-r{n}", dataset_version=f"{model}-data"))

        async def two_versions() -> bool:
            return len(await versions_of(registry, model)) == 2

        await eventually(two_versions, what="two versions")
        for version in (1, 2):
            await publisher.publish(example(ModelEvaluated, model=model, version=version, decision="approved"))

        def rollout(version: int, stable: int | None, to_state: str, reason: str) -> RolloutChanged:
            return example(
                RolloutChanged,
                model=model,
                rollout_id=f"ro-{version}",
                candidate_version=version,
                stable_version=stable,
                to_state=to_state,
                reason=reason,
            )

        async def champion() -> int | None:
            answer = await http.get(f"/v1/models/{model}/versions/champion", headers=AS["viewer"])
            return answer.json()["version"] if answer.status_code == 200 else None

        async def status(version: int) -> str:
            return str(
                (await http.get(f"/v1/models/{model}/versions/{version}", headers=AS["viewer"])).json()["status"]
            )

        await publisher.publish(rollout(1, None, "promoted", "first version"))
        await eventually(lambda: _equals(champion(), 1), what="champion = 1")
        await publisher.publish(rollout(2, 1, "canary", "step 1"))
        await publisher.publish(rollout(2, 1, "promoted", "canary healthy"))
        await eventually(lambda: _equals(champion(), 2), what="champion = 2 after promotion")
        assert await status(1) == "retired" and await status(2) == "serving"
        await publisher.publish(rollout(2, 1, "rolled-back", "error rate doubled"))
        await eventually(lambda: _equals(champion(), 1), what="champion back to 1 after rollback")
        assert await status(2) == "rejected" and await status(1) == "serving"

        await publisher.publish(example(DriftDetected, model=model, version=2))
        await publisher.publish(example(AlertRaised, model=model, labels={"model": model, "version": "2"}))

        async def full_chain() -> bool:
            chain = (await http.get(f"/v1/models/{model}/versions/2/lineage", headers=AS["viewer"])).json()
            return {h["kind"] for h in chain["history"]} == {"DriftDetected", "AlertRaised"}

        await eventually(full_chain, what="drift and alert in the lineage")
        chain = (await http.get(f"/v1/models/{model}/versions/2/lineage", headers=AS["viewer"])).json()
    assert chain["dataset"]["version"] == f"{model}-data" and chain["dataset"]["sha256"] == "c" * 64
    assert chain["dataset"]["profile"] is not None, "the training profile is kept with the dataset"
    assert chain["run"]["run_id"] == f"{model}-r2" and chain["run"]["status"] == "succeeded"
    assert chain["spec"]["revision"] == 1
    assert chain["version"]["version"] == 2 and chain["version"]["status"] == "rejected"
    assert [e["decision"] for e in chain["evaluations"]] == ["approved"]
    assert [r["to_state"] for r in chain["rollouts"]] == ["canary", "promoted", "rolled-back"]


async def test_a_promotion_that_arrives_before_the_versions_evaluation_is_applied_once_it_is_recorded(
    registries: Callable[..., Awaitable[Registry]], publisher: Bus
) -> None:
    registry = await registries()
    model = f"m-{uuid.uuid4().hex[:8]}"
    await publisher.publish(trained(model, f"{model}-r1"))

    async def one_version() -> bool:
        return len(await versions_of(registry, model)) == 1

    await eventually(one_version, what="v1 registered")
    # The deployer promoted v1 on the evaluator's approval; the registry hears of the promotion first.
    promoted = example(
        RolloutChanged, model=model, rollout_id="ro-1", candidate_version=1, stable_version=None, to_state="promoted"
    )
    await publisher.publish(promoted)
    await eventually(lambda: _equals(_status_of(registry, model, 1), "evaluating"), what="v1 still evaluating")
    await publisher.publish(example(ModelEvaluated, model=model, version=1, decision="approved"))
    await eventually(lambda: _equals(_status_of(registry, model, 1), "serving"), what="v1 serving once approved")


async def _status_of(registry: Registry, model: str, version: int) -> str:
    async with client(registry) as http:
        return str((await http.get(f"/v1/models/{model}/versions/{version}", headers=AS["viewer"])).json()["status"])


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_applying_a_spec_publishes_it_once_and_a_bad_spec_names_its_yaml_paths(
    registries: Callable[..., Awaitable[Registry]], registry_settings: Settings
) -> None:
    registry = await registries()
    model = f"m-{uuid.uuid4().hex[:8]}"
    spec_yaml = (ROOT / "schemas/examples/model-spec.yaml").read_text().replace("model: churn", f"model: {model}")
    async with client(registry) as http:
        first = (await http.post("/v1/specs", json={"spec_yaml": spec_yaml}, headers=AS["admin"])).json()
        again = (await http.post("/v1/specs", json={"spec_yaml": spec_yaml}, headers=AS["admin"])).json()
        changed = spec_yaml.replace("bake_seconds: 30", "bake_seconds: 45")
        second = (await http.post("/v1/specs", json={"spec_yaml": changed}, headers=AS["admin"])).json()
        bad = await http.post(
            "/v1/specs",
            json={"spec_yaml": changed.replace("task: classification", "task: ranking")},
            headers=AS["admin"],
        )
        audit = (await http.get("/v1/audit", params={"target": model}, headers=AS["viewer"])).json()
    assert (first["revision"], first["changed"]) == (1, True)
    assert (again["revision"], again["changed"]) == (1, False)
    assert (second["revision"], second["changed"]) == (2, True)
    assert bad.status_code == 422
    assert [(e["path"], e["line"]) for e in bad.json()["errors"]] == [("task", 6)]
    assert [(a["action"], a["outcome"], a["actor"]) for a in audit][:1] == [("apply-spec", "refused", "alice")]

    async def published() -> list[ModelSpecApplied]:
        found = [
            decode(r.value, list(r.headers)).event for r in await read_all(registry_settings, topics.MODEL_SPEC_APPLIED)
        ]
        return [e for e in found if isinstance(e, ModelSpecApplied) and e.model == model]

    async def both_published() -> bool:
        return len(await published()) == 2

    await eventually(both_published, what="two ModelSpecApplied")
    revisions = await published()
    assert [e.revision for e in revisions] == [1, 2] and revisions[1].spec.rollout.bake_seconds == 45


def _route_call(route: APIRoute) -> tuple[str, str]:
    path = route.path
    for name in route.param_convertors:
        path = path.replace("{" + name + "}", "start" if name == "command" else "1" if name == "version" else "x")
    return next(iter(route.methods)), path


def _required_role(route: APIRoute) -> str | None:
    roles = [d.call.role for d in route.dependant.dependencies if isinstance(d.call, RoleCheck)]
    return roles[0] if roles else None


async def test_every_route_refuses_anonymous_callers_with_401_and_weaker_roles_with_403(
    registries: Callable[..., Awaitable[Registry]],
) -> None:
    registry = await registries()
    routes = [r for r in registry.api.routes if isinstance(r, APIRoute) and r.path.startswith("/v1/")]
    guarded = {(r.path, tuple(sorted(r.methods))): _required_role(r) for r in routes}
    assert None not in guarded.values(), f"unguarded routes: {[k for k, v in guarded.items() if v is None]}"
    operator_routes = [r for r in routes if _required_role(r) == "operator"]
    admin_routes = [r for r in routes if _required_role(r) == "admin"]
    assert {r.name for r in operator_routes} == {
        "approve",
        "reject",
        "rollout",
        "retrain",
        "put_alias",
        "delete_alias",
        "put_tag",
        "delete_tag",
        "data_arrived",
        "labels_arrived",
        "replay_letter",
    }
    assert {r.name for r in admin_routes} == {"apply_spec"}
    async with client(registry) as http:
        for route in routes:
            method, path = _route_call(route)
            body = {} if method in ("POST", "PUT") else None
            anonymous = await http.request(method, path, json=body)
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            assert anonymous.headers["www-authenticate"] == "Bearer"
            forged = await http.request(method, path, json=body, headers={"Authorization": "Bearer adm-token-x"})
            assert forged.status_code == 401, (method, path)
            weaker = {"operator": ["viewer"], "admin": ["viewer", "operator"]}.get(_required_role(route) or "", [])
            for role in weaker:
                refused = await http.request(method, path, json=body, headers=AS[role])
                assert refused.status_code == 403, (method, path, role, refused.text)


async def test_operator_actions_emit_events_and_are_audited_refusals_too(
    registries: Callable[..., Awaitable[Registry]], publisher: Bus, registry_settings: Settings
) -> None:
    registry = await registries()
    model = f"m-{uuid.uuid4().hex[:8]}"
    spec_yaml = (ROOT / "schemas/examples/model-spec.yaml").read_text().replace("model: churn", f"model: {model}")
    async with client(registry) as http:
        await http.post("/v1/specs", json={"spec_yaml": spec_yaml}, headers=AS["admin"])
        await publisher.publish(trained(model, f"{model}-r1"))

        async def one_version() -> bool:
            return len(await versions_of(registry, model)) == 1

        await eventually(one_version, what="version 1")
        await publisher.publish(example(ModelEvaluated, model=model, version=1, decision="held-for-review"))

        async def held() -> bool:
            answer = await http.get(f"/v1/models/{model}/versions/1", headers=AS["viewer"])
            return bool(answer.json()["status"] == "held-for-review")

        await eventually(held, what="version 1 held for review")
        approve = await http.post(
            f"/v1/models/{model}/versions/1/approve", json={"reason": "checked by hand"}, headers=AS["operator"]
        )
        twice = await http.post(f"/v1/models/{model}/versions/1/approve", json={}, headers=AS["operator"])
        champion = await http.put(f"/v1/models/{model}/aliases/champion", json={"version": 1}, headers=AS["operator"])
        staging = await http.put(f"/v1/models/{model}/aliases/staging", json={"version": 1}, headers=AS["operator"])
        by_alias = await http.get(f"/v1/models/{model}/versions/staging", headers=AS["viewer"])
        tagged = await http.put(
            f"/v1/models/{model}/versions/1/tags/owner", json={"value": "growth"}, headers=AS["operator"]
        )
        search = await http.get(
            "/v1/versions", params={"tag": "owner=growth", "metric": "accuracy>=0"}, headers=AS["viewer"]
        )
        retrain = await http.post(f"/v1/models/{model}/retrain", json={"reason": "fresh data"}, headers=AS["operator"])
        unknown = await http.post(f"/v1/models/{model}/rollout/start", json={"version": 9}, headers=AS["operator"])
        audit = (await http.get("/v1/audit", params={"target": model}, headers=AS["viewer"])).json()
    assert approve.status_code == 200 and approve.json()["event_id"]
    assert twice.status_code == 409 and "is approved" in twice.json()["detail"]
    assert champion.status_code == 409 and "move with rollouts" in champion.json()["detail"]
    assert staging.status_code == 200 and by_alias.json()["version"] == 1
    assert tagged.status_code == 200 and [v["model"] for v in search.json()].count(model) == 1
    assert retrain.status_code == 200
    assert unknown.status_code == 404 and f"{model}@9 does not exist" in unknown.json()["detail"]
    summary = [(a["action"], a["outcome"], a["actor"]) for a in reversed(audit)]
    assert summary == [
        ("apply-spec", "ok", "alice"),
        ("approve", "ok", "olga"),
        ("approve", "refused", "olga"),
        ("set-alias", "refused", "olga"),
        ("set-alias", "ok", "olga"),
        ("set-tag", "ok", "olga"),
        ("retrain", "ok", "olga"),
        ("rollout-start", "refused", "olga"),
    ]
    assert audit[-2]["reason"] == "checked by hand"

    async def commands_published() -> bool:
        commanded = await read_all(registry_settings, topics.ROLLOUT_COMMANDED)
        retrains = await read_all(registry_settings, topics.RETRAIN_REQUESTED)
        return len(commanded) == 1 and len(retrains) == 1

    await eventually(commands_published, what="RolloutCommanded and RetrainRequested on the bus")
    record = (await read_all(registry_settings, topics.ROLLOUT_COMMANDED))[0]
    command = decode(record.value, list(record.headers))
    assert command.event.model_dump(include={"command", "version", "actor"}) == {
        "command": "approve",
        "version": 1,
        "actor": "olga",
    }


async def test_a_dataset_recorded_after_its_first_training_still_gets_the_training_profile(
    registries: Callable[..., Awaitable[Registry]], publisher: Bus
) -> None:
    registry = await registries()
    model = f"m-{uuid.uuid4().hex[:8]}"
    await publisher.publish(trained(model, f"{model}-r1", dataset_version=f"{model}-late"))

    async def registered() -> bool:
        return len(await versions_of(registry, model)) == 1

    await eventually(registered, what="the version")
    await publisher.publish(example(DataArrived, dataset="churn", version=f"{model}-late", sha256="e" * 64))
    async with client(registry) as http:

        async def recorded() -> bool:
            answer = await http.get(f"/v1/datasets/churn/{model}-late", headers=AS["viewer"])
            return answer.status_code == 200

        await eventually(recorded, what="the dataset version")
        dataset = (await http.get(f"/v1/datasets/churn/{model}-late", headers=AS["viewer"])).json()
    assert dataset["profile"] == trained(model, "x").reference_profile.model_dump(mode="json")
