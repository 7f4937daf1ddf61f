"""The contract's producer/consumer table: every service's HANDLERS table reacts to exactly the
events the table says it consumes, and the ACLs generated from it grant nothing beyond it."""

from __future__ import annotations

import importlib

import pytest

from shared.contract import access, topics
from shared.contract.events import DataArrived, LabelsArrived, RolloutChanged

GROUP_SERVICES = {
    "registry": "services.registry.app",
    "trainer": "services.trainer.app",
    "evaluator": "services.evaluator.app",
    "deployer": "services.deployer.app",
    "monitor": "services.monitor.app",
    "alerter": "services.alerter.app",
}


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
    assert reads == {RolloutChanged.topic} and writes == {topics.PREDICTIONS_LOGGED}


def test_outside_producers_may_write_data_and_labels_and_read_nothing() -> None:
    grants = [g for g in access.grants("modelbus") if g.principal == "producer"]
    assert {(g.name, g.operation) for g in grants} == {
        (f"modelbus.{DataArrived.topic}", "WRITE"),
        (f"modelbus.{LabelsArrived.topic}", "WRITE"),
    }


def test_each_service_may_join_its_own_consumer_group_only() -> None:
    groups = {(g.principal, g.name) for g in access.grants("p") if g.resource == "group"}
    assert groups == {(service, f"p.{service}") for service in topics.GROUP_MEMBERS}


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
    }
