"""Faults, on the short profile (bench/reliability.py runs the full one): processes killed -9 at
random during concurrent lifecycles while consumer groups scale 1 → 3 → 1, the broker and the
database restarted, the S3 server stopped during an upload. Nothing is lost, nothing is done
twice, everything comes back by itself."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.runtime.settings import Settings
from tests.support.faults import PROFILES, Harness, chaos, restart, s3_outage

pytestmark = pytest.mark.timeout(1800)
PROFILE = PROFILES["short"]


@pytest.fixture(scope="module")
async def harness(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    h = Harness(base_settings, tmp_path_factory.mktemp("faults"))
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


async def test_lifecycles_complete_through_random_kills_and_scaling_with_nothing_lost_or_doubled(
    harness: Harness,
) -> None:
    report = await chaos(harness, PROFILE)
    assert report.kill_count == PROFILE.kills and len(report.kills) == 7, report.kills
    assert report.completed == report.lifecycles == PROFILE.lifecycles, report.outcomes
    assert report.outcomes == {"promoted": PROFILE.lifecycles}
    assert report.versions == report.evaluations == PROFILE.lifecycles
    assert report.rollout_changes >= PROFILE.lifecycles
    assert report.alerts == 0 and report.dead_letters == 0
    assert report.missing == {}, "every event produced was handled by every group that reads it"
    assert set(report.duplicates.values()) == {0}, report.duplicates
    assert report.produced["PredictionsLogged"] == PROFILE.prediction_batches
    monitor = next(handled for group, handled in report.consumed.items() if group.endswith(".monitor"))
    assert monitor["PredictionsLogged"] == PROFILE.prediction_batches


@pytest.mark.parametrize("component", ["kafka", "postgres"])
async def test_the_platform_recovers_by_itself_when_the_broker_or_the_database_restarts(
    harness: Harness, component: str
) -> None:
    recovery = await restart(harness, component)
    assert recovery.processes_alive, recovery.detail
    assert recovery.recovered_seconds is not None, f"no new data handled within 180 s after {component} came back"


async def test_an_upload_that_keeps_failing_ends_in_training_failed_after_its_retries(harness: Harness) -> None:
    outcome = await s3_outage(harness)
    assert outcome.failed is not None, "no TrainingFailed while the S3 server was down"
    assert outcome.failed.stage == "upload"
    assert "gave up after 3 attempts" in outcome.failed.reason
    assert outcome.recovered_seconds is not None, "training did not work again once S3 was back"
    assert harness.platform.dead() == []
