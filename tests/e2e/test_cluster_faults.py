"""The platform on a three-broker Kafka cluster, on the short profile (bench/faults.py runs the
full one): the leader of the busiest partitions killed -9 and restarted during concurrent
lifecycles and prediction load, then two brokers of three stopped at once. Every lifecycle ends,
no event is lost or handled twice, no acknowledged write is lost, and production resumes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.ops.kafka import KafkaCluster
from shared.runtime.settings import Settings
from tests.support.cluster import PROFILES, cluster_harness, kill_leaders, lose_two, three_brokers
from tests.support.faults import Harness

pytestmark = pytest.mark.timeout(1800)
PROFILE = PROFILES["short"]


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaCluster]:
    async with three_brokers(tmp_path_factory.mktemp("cluster")) as found:
        yield found


@pytest.fixture(scope="module")
async def harness(
    base_settings: Settings, cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Harness]:
    h = cluster_harness(base_settings, cluster, Path(tmp_path_factory.mktemp("cluster-platform")))
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


async def test_killing_the_busiest_leader_loses_nothing_doubles_nothing_and_production_resumes(
    harness: Harness, cluster: KafkaCluster
) -> None:
    report = await kill_leaders(harness, cluster, PROFILE)
    assert len(report.kills) == PROFILE.kills
    assert all(k.partitions_led >= 1 for k in report.kills)
    assert all(k.resumed_seconds is not None for k in report.kills), report.kills
    assert all(k.back_in_sync_seconds is not None for k in report.kills), report.kills
    assert report.completed == report.lifecycles == PROFILE.lifecycles, report.outcomes
    assert report.outcomes == {"promoted": PROFILE.lifecycles}
    assert report.missing == {}, "every event produced was handled by every group that reads it"
    assert set(report.duplicates.values()) == {0}, report.duplicates
    assert report.produced["PredictionsLogged"] == PROFILE.prediction_batches
    assert report.probe_acked > 0 and report.probe_lost == 0, "an acknowledged write was lost"
    assert harness.platform.dead() == []


async def test_two_brokers_down_refuse_writes_visibly_and_the_platform_resumes_with_one_back(
    harness: Harness, cluster: KafkaCluster
) -> None:
    outcome = await lose_two(harness, cluster)
    assert outcome.acked_during == 0, "with one broker of three, no write may be acknowledged"
    assert sum(outcome.refused_during.values()) > 0, "producers failed visibly (or blocked)"
    assert outcome.acked_lost == 0
    assert outcome.resumed_seconds is not None
    assert outcome.lifecycle_after == "promoted"
    assert outcome.processes_alive
