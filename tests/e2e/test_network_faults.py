"""Network faults with toxiproxy between the services and Kafka, PostgreSQL and S3, on the short
profile (bench/faults.py runs the full one): latency, a narrow pipe to S3, a PostgreSQL blackhole
for one service, Kafka connections reset again and again. Each ends with every lifecycle done,
nothing lost or handled twice, every process alive, and new data going through again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.runtime.settings import Settings
from tests.support.faults import Harness
from tests.support.toxics import (
    PROFILES,
    FaultReport,
    Toxiproxy,
    behind_toxiproxy,
    database_blackhole,
    kafka_resets,
    latency,
    slow_uploads,
)

pytestmark = pytest.mark.timeout(1800)
PROFILE = PROFILES["short"]


@pytest.fixture(scope="module")
async def proxied(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Harness, Toxiproxy]]:
    async with behind_toxiproxy(base_settings, tmp_path_factory.mktemp("toxiproxy")) as found:
        yield found


def came_through(report: FaultReport) -> None:
    assert report.completed == report.lifecycles, report.outcomes
    assert report.outcomes == {"promoted": report.lifecycles}
    assert report.missing == {}, "every event produced was handled by every group that reads it"
    assert set(report.duplicates.values()) == {0}, report.duplicates
    assert report.processes_alive, report.detail
    assert report.recovered_seconds is not None, "new data did not go through after the fault"


async def test_lifecycles_complete_through_200_ms_of_latency(proxied: tuple[Harness, Toxiproxy]) -> None:
    came_through(await latency(*proxied, PROFILE))


async def test_lifecycles_complete_through_64_kb_s_to_s3(proxied: tuple[Harness, Toxiproxy]) -> None:
    came_through(await slow_uploads(*proxied, PROFILE))


async def test_one_service_survives_30_s_of_postgresql_blackhole(proxied: tuple[Harness, Toxiproxy]) -> None:
    report = await database_blackhole(*proxied, PROFILE)
    assert report.lasted_seconds >= PROFILE.blackhole
    came_through(report)


async def test_connections_to_kafka_reset_every_5_s_lose_nothing(proxied: tuple[Harness, Toxiproxy]) -> None:
    report = await kafka_resets(*proxied, PROFILE)
    assert report.detail["resets"] >= PROFILE.resets_for // 5
    came_through(report)
