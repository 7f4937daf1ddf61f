"""The contract's producer/consumer table: every service's HANDLERS table reacts to exactly the
events the table says it consumes, and the ACLs generated from it grant nothing beyond it."""

from __future__ import annotations

import importlib

import pytest

from shared.contract import access, topics
from shared.contract.events import DataArrived, LabelsArrived, RolloutChanged
from tests.support.faults import GROUPS

GROUP_SERVICES = GROUPS  # service: the module of its app, whose HANDLERS join its consumer group


@pytest.mark.parametrize("service", sorted(GROUP_SERVICES))
def test_a_service_handles_exactly_the_events_the_contract_lets_it_consume(service: str) -> None:
    handled = set(importlib.import_module(GROUP_SERVICES[service]).HANDLERS)
    declared = {cls for cls in access.event_classes() if service in cls.consumed_by}
    # The registry reads the dead-letter topic through its API (no consumer group), so it is
    # declared a reader without being a handler.
    if service == "registry":
        declared = {cls for cls in declared if cls.topic != topics.DEAD_LETTER}
    assert handled == declared, f"{service}: handles {sorted(c.__name__ for c in handled ^ declared)} unlike the table"


def test_serving_follows_rollouts_and_writes_predictions_only() -> None:
    reads = {t for t, (_, readers) in access.topic_table().items() if "serving" in readers}
    writes = {t for t, (writers, _) in access.topic_table().items() if "serving" in writers}
    assert reads == {RolloutChanged.topic} and writes == {topics.PREDICTIONS_LOGGED, topics.DEAD_LETTER}


def test_outside_producers_may_write_data_labels_and_feature_records_and_read_nothing() -> None:
    grants = [g for g in access.grants("modelbus") if g.principal == "producer"]
    assert {(g.name, g.operation, g.pattern) for g in grants} == {
        (f"modelbus.{DataArrived.topic}", "WRITE", "literal"),
        (f"modelbus.{LabelsArrived.topic}", "WRITE", "literal"),
        ("modelbus.inputs.", "WRITE", "prefixed"),
    }


def test_outside_consumers_read_the_models_predictions_in_groups_of_their_own_and_nothing_else() -> None:
    grants = {(g.resource, g.name, g.operation, g.pattern) for g in access.grants("p") if g.principal == "consumer"}
    assert grants == {("topic", "p.outputs.", "READ", "prefixed"), ("group", "p.consumer.", "READ", "prefixed")}


def test_serving_reads_inputs_writes_outputs_in_transactions_of_its_scorers_only() -> None:
    mine = {(g.resource, g.name, g.operation) for g in access.grants("p") if g.principal == "serving"}
    streams = {m for m in mine if not m[1].startswith(("p.predictions", "p.rollout", "p.dead"))}
    assert streams == {
        ("topic", "p.inputs.", "CREATE"),
        ("topic", "p.outputs.", "CREATE"),
        ("topic", "p.inputs.", "READ"),
        ("topic", "p.outputs.", "WRITE"),
        ("group", "p.scorer", "READ"),
        ("transactional_id", "p.scorer.", "WRITE"),
    }
    assert not any(g.principal == "producer" and g.name.startswith("p.outputs") for g in access.grants("p"))


def test_each_service_may_join_its_own_consumer_group_only() -> None:
    grants = access.grants("p")
    groups = {(g.principal, g.name) for g in grants if g.resource == "group" and g.operation == "READ"}
    scorers, readers = ("serving", "p.scorer"), ("consumer", "p.consumer.")
    assert groups == {(service, f"p.{service}") for service in topics.GROUP_MEMBERS} | {scorers, readers}


def test_the_autoscaler_sees_the_groups_lag_and_reads_no_event() -> None:
    mine = [g for g in access.grants("p") if g.principal == "autoscaler"]
    assert {g.operation for g in mine} == {"DESCRIBE"}
    assert {g.name for g in mine if g.resource == "group"} == {f"p.{s}" for s in (*topics.GROUP_MEMBERS, "scorer")}
    assert not any(access.allowed("autoscaler", op, t) for t in access.topic_table() for op in ("READ", "WRITE"))


def test_only_the_deployer_writes_rollouts_and_only_the_evaluator_verdicts() -> None:
    writers = {t: w for t, (w, _) in access.topic_table().items()}
    assert writers[topics.ROLLOUT_CHANGED] == {"deployer"}
    assert writers[topics.MODEL_EVALUATED] == {"evaluator"}
    assert writers[topics.MODEL_SPEC_APPLIED] == {"registry"}
    assert writers[topics.ROLLOUT_COMMANDED] == {"registry"}


def test_the_admin_needs_no_grant_and_every_grant_names_the_platform_prefix() -> None:
    found = access.grants("acme")
    assert all(g.principal != "admin" for g in found)
    assert all(g.name.startswith("acme.") for g in found)
    prefixed = [g for g in found if g.pattern == "prefixed"]
    assert {(g.principal, g.name, g.operation) for g in prefixed} == {
        ("alerter", "acme.alerts", "CREATE"),
        ("alerter", "acme.alerts", "WRITE"),
        ("producer", "acme.inputs.", "WRITE"),
        ("serving", "acme.inputs.", "CREATE"),
        ("serving", "acme.inputs.", "READ"),
        ("serving", "acme.outputs.", "CREATE"),
        ("serving", "acme.outputs.", "WRITE"),
        ("serving", "acme.scorer.", "WRITE"),
        ("consumer", "acme.outputs.", "READ"),
        ("consumer", "acme.consumer.", "READ"),
        ("autoscaler", "acme.inputs.", "DESCRIBE"),
    }


async def test_a_spec_revision_that_skips_ahead_is_dead_lettered_and_later_real_revisions_still_apply() -> None:
    from services.deployer import app as deployer
    from tests.support.specs import example_spec, spec_applied

    bus = deployer.in_memory()
    spec = example_spec("churn")
    await bus.handle(spec_applied(spec=spec, revision=1))
    forged = spec.model_copy(update={"rollout": spec.rollout.model_copy(update={"steps": [100]})})
    await bus.handle(spec_applied(spec=forged, revision=2_147_483_000))
    assert [(d.kind, d.reason) for d in bus.dead_letters] == [
        ("refused", "spec revision 2147483000 of churn skips ahead of revision 1: "
         "the registry numbers a model's revisions one by one"),
    ]  # fmt: skip
    assert await bus.store.spec_of("churn") == spec
    await bus.handle(spec_applied(spec=spec.model_copy(update={"description": "real"}), revision=2))
    kept = await bus.store.spec_of("churn")
    assert kept is not None and kept.description == "real"
