"""The evaluator's handlers on its in-memory store: judged once, against the champion, parked
until the spec arrives, rolled back when judging fails, bad messages dead-lettered."""

from __future__ import annotations

import pytest

from services.evaluator import app
from shared.contract.envelope import encode
from shared.contract.events import ArtifactRef, ModelEvaluated, ModelRegistered
from tests.support.judges import FakeJudge
from tests.support.specs import example_spec, spec_applied

MODEL = example_spec().model


def artifacts(version: int) -> list[ArtifactRef]:
    return [
        ArtifactRef(name=name, uri=f"s3://bucket/{MODEL}/v{version}/{name}", sha256=f"{version:064x}", size_bytes=10)
        for name in ("model.skops", "test-split.parquet")
    ]


def registered(version: int, *, champion: int | None = None) -> ModelRegistered:
    return ModelRegistered(
        model=MODEL,
        version=version,
        run_id=f"run-{version}",
        dataset_version="v1",
        task="classification",
        artifacts=artifacts(version),
        metrics={"accuracy": 0.8},
        champion_version=champion,
    )


async def test_a_registration_with_its_spec_known_is_judged_and_its_result_kept() -> None:
    judge = FakeJudge()
    bus = app.in_memory(judge)
    await bus.handle(spec_applied())
    emitted = await bus.handle(registered(1), event_id="reg-1")
    [evaluated] = emitted
    assert isinstance(evaluated, ModelEvaluated)
    assert (evaluated.model, evaluated.version, evaluated.decision, evaluated.passed) == (MODEL, 1, "approved", True)
    assert evaluated.causation_id == "reg-1"
    assert await bus.store.result_of(MODEL, 1) == "approved"


async def test_a_version_failing_a_gate_is_rejected() -> None:
    bus = app.in_memory(FakeJudge(passes=False))
    await bus.handle(spec_applied())
    [evaluated] = await bus.handle(registered(1))
    assert (evaluated.decision, evaluated.passed) == ("rejected", False)
    assert [g.name for g in evaluated.gates if not g.passed] == ["min_accuracy"]


async def test_a_redelivered_registration_changes_nothing() -> None:
    judge = FakeJudge()
    bus = app.in_memory(judge)
    await bus.handle(spec_applied())
    await bus.handle(registered(1), event_id="reg-1")
    assert await bus.handle(registered(1), event_id="reg-1") == []
    assert len(judge.asked) == 1


async def test_a_version_registered_again_under_a_new_id_is_not_judged_twice() -> None:
    judge = FakeJudge()
    bus = app.in_memory(judge)
    await bus.handle(spec_applied())
    await bus.handle(registered(1))
    assert await bus.handle(registered(1)) == []
    assert len(judge.asked) == 1


async def test_a_registration_before_its_spec_is_parked_and_judged_when_the_spec_arrives() -> None:
    judge = FakeJudge()
    bus = app.in_memory(judge)
    assert await bus.handle(registered(2)) == []
    assert await bus.handle(registered(1)) == []
    assert judge.asked == []
    emitted = await bus.handle(spec_applied())
    assert [(e.version, e.decision) for e in emitted] == [(1, "approved"), (2, "approved")]
    assert bus.store.parked == {}


async def test_an_older_spec_revision_arriving_late_releases_nothing() -> None:
    bus = app.in_memory(FakeJudge())
    await bus.handle(spec_applied(MODEL, 2))
    await bus.store.park(registered(3))
    assert await bus.handle(spec_applied(MODEL, 1)) == []
    assert (MODEL, 3) in bus.store.parked
    assert bus.store.specs[MODEL].revision == 2


async def test_a_version_is_compared_with_the_champion_it_names() -> None:
    judge = FakeJudge()
    bus = app.in_memory(judge)
    await bus.handle(spec_applied())
    await bus.handle(registered(1))
    [evaluated] = await bus.handle(registered(2, champion=1))
    assert judge.asked[-1] == (2, artifacts(1))
    assert evaluated.champion_version == 1


async def test_a_champion_the_evaluator_never_saw_is_not_compared_with() -> None:
    judge = FakeJudge()
    bus = app.in_memory(judge)
    await bus.handle(spec_applied())
    [evaluated] = await bus.handle(registered(5, champion=4))
    assert judge.asked == [(5, None)]
    assert evaluated.champion_version is None


async def test_a_judge_that_fails_leaves_nothing_behind_and_the_registration_comes_back() -> None:
    judge = FakeJudge(fails_with=TimeoutError("artifact store away"))
    bus = app.in_memory(judge)
    await bus.handle(spec_applied())
    with pytest.raises(TimeoutError):
        await bus.handle(registered(1), event_id="reg-1")
    assert bus.store.versions == {} and bus.store.results == {}
    judge.fails_with = None
    [evaluated] = await bus.handle(registered(1), event_id="reg-1")
    assert evaluated.decision == "approved"


async def test_a_registration_that_does_not_validate_is_dead_lettered_with_the_field_named() -> None:
    bus = app.in_memory(FakeJudge())
    message = encode(registered(1), source="/tests")
    body = message.value.replace(b'"version":1', b'"version":0')
    assert await bus.handle_raw(body, message.headers) == []
    [letter] = bus.dead_letters
    assert letter.kind == "validation" and "version" in letter.reason
    assert bus.store.versions == {}
