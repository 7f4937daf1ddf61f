"""Operators' commands on the registry's in-memory store, through the same unit of work the API
uses: each rule an action obeys, its audit entry (written first, its id in the command the action
emits; written apart as `refused` when the action is refused, while the action leaves nothing)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from services.registry import commands, domain
from services.registry.memory import MemoryStore
from shared.contract.events import (
    DataArrived,
    LabelsArrived,
    ModelSpecApplied,
    ModelTrained,
    RetrainRequested,
    RolloutCommanded,
)
from shared.contract.specparse import SpecError
from shared.runtime.commands import MemoryCommands
from shared.runtime.specfile import load_spec_checked
from tests.support.examples import example

MODEL = "churn"
OPS = commands.Actor(actor="ann", role="operator")
SPEC = (Path(__file__).resolve().parents[3] / "schemas" / "examples" / "model-spec.yaml").read_text()


async def platform(*statuses: str) -> MemoryCommands[MemoryStore]:
    """A registry whose versions 1, 2, … have the statuses given."""
    store = MemoryStore()
    for status in statuses:
        trained = example(ModelTrained, model=MODEL, run_id=f"run-{uuid.uuid4().hex[:6]}")
        created, _ = await store.register_version(trained, event_id=str(uuid.uuid4()))
        store.versions[(MODEL, created.version)] = created.model_copy(update={"status": status})
    return MemoryCommands(store)


async def test_approving_a_version_held_for_review_audits_it_and_commands_its_rollout() -> None:
    bus = await platform("held-for-review")
    event_id = await bus.run(commands.approve, commands.Approve(who=OPS, reason="looks fine", name=MODEL, version=1))
    assert await bus.store.status_of(MODEL, 1) == "approved"
    [entry] = bus.store.audits
    [command] = bus.emitted
    assert isinstance(command, RolloutCommanded) and command.command == "approve" and command.audit_id == entry.id
    assert (entry.actor, entry.action, entry.target, entry.outcome) == ("ann", "approve", f"{MODEL}@1", "ok")
    assert event_id


@pytest.mark.parametrize("status", ["approved", "rejected", "serving", "evaluating"])
async def test_only_a_version_held_for_review_is_approved_and_a_refusal_is_audited_and_changes_nothing(
    status: str,
) -> None:
    bus = await platform(status)
    with pytest.raises(domain.RegistryRefusal, match="only a version held for review"):
        await bus.run(commands.approve, commands.Approve(who=OPS, name=MODEL, version=1))
    assert await bus.store.status_of(MODEL, 1) == status and not bus.emitted
    [entry] = bus.store.audits
    assert entry.outcome == "refused" and "held for review" in entry.detail["error"]


async def test_a_serving_version_is_not_rejected_by_hand_and_the_refusal_says_to_roll_back() -> None:
    bus = await platform("serving", "approved")
    with pytest.raises(domain.RegistryRefusal, match="roll it back instead"):
        await bus.run(commands.reject, commands.Reject(who=OPS, name=MODEL, version=1))
    await bus.run(commands.reject, commands.Reject(who=OPS, reason="bias", name=MODEL, version=2))
    assert await bus.store.status_of(MODEL, 2) == "rejected"
    assert [e.outcome for e in bus.store.audits] == ["refused", "ok"]


async def test_a_rollout_starts_only_an_approved_or_retired_version_and_needs_one() -> None:
    bus = await platform("serving", "rejected", "retired")
    start = commands.CommandRollout(who=OPS, name=MODEL, command="start")
    with pytest.raises(domain.RegistryRefusal, match="needs a version"):
        await bus.run(commands.rollout, start)
    with pytest.raises(domain.RegistryRefusal, match="only approved or retired"):
        await bus.run(commands.rollout, commands.CommandRollout(who=OPS, name=MODEL, command="start", version=2))
    with pytest.raises(domain.NotFound):
        await bus.run(commands.rollout, commands.CommandRollout(who=OPS, name=MODEL, command="promote", version=9))
    await bus.run(commands.rollout, commands.CommandRollout(who=OPS, name=MODEL, command="start", version=3))
    [command] = bus.emitted
    assert isinstance(command, RolloutCommanded) and (command.command, command.version) == ("start", 3)
    assert [e.outcome for e in bus.store.audits] == ["refused", "refused", "refused", "ok"]


async def test_a_retrain_needs_a_spec_and_a_named_dataset_version_that_arrived() -> None:
    bus = await platform("serving")
    retrain = commands.Retrain(who=OPS, name=MODEL, dataset_version="d7")
    with pytest.raises(domain.NotFound, match="no spec applied"):
        await bus.run(commands.retrain, retrain)
    spec = load_spec_checked(SPEC, None)
    await bus.store.apply_spec(spec, SPEC, applied_by="ops")
    with pytest.raises(domain.NotFound, match="d7"):
        await bus.run(commands.retrain, retrain)
    await bus.store.record_dataset(example(DataArrived, dataset=spec.dataset, version="d7"), event_id="e1")
    await bus.run(commands.retrain, retrain)
    [asked] = bus.emitted
    assert isinstance(asked, RetrainRequested) and (asked.dataset_version, asked.requested_by) == ("d7", "ann")


async def test_the_registrys_own_aliases_are_not_set_by_hand_and_a_missing_one_is_not_dropped() -> None:
    bus = await platform("serving", "approved")
    with pytest.raises(domain.RegistryRefusal, match="kept by the registry"):
        await bus.run(commands.set_alias, commands.SetAlias(who=OPS, name=MODEL, alias="champion", version=2))
    with pytest.raises(domain.NotFound):
        await bus.run(commands.set_alias, commands.SetAlias(who=OPS, name=MODEL, alias="blue", version=5))
    await bus.run(commands.set_alias, commands.SetAlias(who=OPS, name=MODEL, alias="blue", version=2))
    assert await bus.store.aliases_of(MODEL) == {"blue": 2}
    await bus.run(commands.drop_alias, commands.DropAlias(who=OPS, name=MODEL, alias="blue"))
    with pytest.raises(domain.NotFound, match="no alias 'blue'"):
        await bus.run(commands.drop_alias, commands.DropAlias(who=OPS, name=MODEL, alias="blue"))


async def test_a_tag_needs_its_version_and_dropping_a_missing_one_is_refused() -> None:
    bus = await platform("serving")
    with pytest.raises(domain.NotFound):
        await bus.run(commands.set_tag, commands.SetTag(who=OPS, name=MODEL, version=3, key="team", value="a"))
    await bus.run(commands.set_tag, commands.SetTag(who=OPS, name=MODEL, version=1, key="team", value="a"))
    assert (await bus.store.get_version(MODEL, 1)).tags == {"team": "a"}
    with pytest.raises(domain.NotFound, match="no tag 'owner'"):
        await bus.run(commands.drop_tag, commands.DropTag(who=OPS, name=MODEL, version=1, key="owner"))


async def test_a_changed_spec_is_published_once_and_an_invalid_one_is_refused_and_audited() -> None:
    bus = await platform()
    admin = commands.Actor(actor="root", role="admin")

    def apply(text: str) -> commands.ApplySpec:
        return commands.ApplySpec(who=admin, spec_yaml=text, named=MODEL, check=lambda t: load_spec_checked(t, None))

    first = await bus.run(commands.apply_spec, apply(SPEC))
    again = await bus.run(commands.apply_spec, apply(SPEC))
    assert (first.revision, first.changed, again.revision, again.changed) == (1, True, 1, False)
    [published] = bus.emitted
    assert isinstance(published, ModelSpecApplied) and published.revision == 1 and published.applied_by == "root"
    with pytest.raises(SpecError):
        await bus.run(commands.apply_spec, apply(SPEC.replace("task:", "tsak:")))
    assert [e.outcome for e in bus.store.audits] == ["ok", "ok", "refused"]
    assert (await bus.store.latest_spec(MODEL)).revision == 1


async def test_a_published_event_is_staged_with_an_audit_entry_naming_its_id() -> None:
    bus = await platform()
    labels = example(LabelsArrived, model=MODEL)
    event_id = await bus.run(commands.publish, commands.Publish(who=OPS, event=labels))
    [entry] = bus.store.audits
    assert bus.emitted == [labels]
    assert (entry.action, entry.target, entry.detail["event_id"]) == ("publish-LabelsArrived", MODEL, event_id)


async def test_workspaces_bound_who_applies_specs_and_publishes_for_a_model() -> None:
    bus = await platform()
    root = commands.Actor(actor="root", role="admin")
    team_a_admin = commands.Actor(actor="ada", role="admin", grants=(("team-a", "admin"),))
    team_a_ops = commands.Actor(actor="olga", role="operator", grants=(("team-a", "operator"),))

    def apply(who: commands.Actor, workspace: str) -> commands.ApplySpec:
        text = SPEC.replace("model: churn\n", f"model: churn\nworkspace: {workspace}\n", 1)
        return commands.ApplySpec(who=who, spec_yaml=text, named=MODEL, check=lambda t: load_spec_checked(t, None))

    with pytest.raises(domain.Forbidden, match="may not apply specs in workspace 'team-b'"):
        await bus.run(commands.apply_spec, apply(team_a_admin, "team-b"))
    await bus.run(commands.apply_spec, apply(root, "team-b"))
    with pytest.raises(domain.Forbidden, match="belongs to 'team-b'"):
        await bus.run(commands.apply_spec, apply(team_a_admin, "team-a"))
    assert await bus.store.workspace_of(MODEL) == "team-b"
    labels = example(LabelsArrived, model=MODEL)
    with pytest.raises(domain.Forbidden, match="may not publish for workspace 'team-b'"):
        await bus.run(commands.publish, commands.Publish(who=team_a_ops, event=labels))
    data = example(DataArrived, dataset="churn")
    with pytest.raises(domain.Forbidden):
        await bus.run(commands.publish, commands.Publish(who=team_a_ops, event=data))
    assert len(bus.emitted) == 1, "only root's spec was published"
    assert [e.outcome for e in bus.store.audits] == ["refused", "ok", "refused", "refused", "refused"]
