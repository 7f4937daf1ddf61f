"""The monitor against the real Kafka and PostgreSQL: predictions in, drift and retrain requests out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from services.monitor import store as monitor_store
from services.monitor import tables as monitor_tables
from services.monitor.app import MonitorService
from services.monitor.app import build as build_monitor
from shared.contract import topics
from shared.contract.envelope import decode
from shared.contract.events import (
    ArtifactRef,
    Calibration,
    CanaryAnalyzed,
    DriftDetected,
    Event,
    FeatureSchema,
    Label,
    LabelsArrived,
    ModelRegistered,
    ModelSpecApplied,
    ModelTrained,
    PerformanceDegraded,
    Prediction,
    PredictionsLogged,
    RetrainRequested,
    RolloutChanged,
    TrafficShare,
)
from shared.ops.example_data import churn_frame
from shared.ops.tools import read_all
from shared.runtime import profile as profiling
from shared.runtime.bus import publish_events
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec
from tests.integration.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())
FEATURES = [f.name for f in EXAMPLE.features]
WINDOW_ROWS = 200


@pytest.fixture
async def monitor(settings: Settings) -> AsyncIterator[MonitorService]:
    update = {"service_name": "monitor", "otlp_endpoint": None, "api_tokens": SecretStr("look=viewer:vic")}
    service = build_monitor(settings.model_copy(update=update))
    await service.start()
    yield service
    await service.stop()


async def publish(settings: Settings, *events: Event) -> None:
    await publish_events(settings, *events, source="it-producer")


async def on_topic(settings: Settings, topic: str, model: str) -> list[Any]:
    found = [decode(r.value, list(r.headers)).event for r in await read_all(settings, topic)]
    return [e for e in found if getattr(e, "model", None) == model]


async def a_trained_version(settings: Settings, model: str, *, versions: int = 1, calibrated: bool = False) -> None:
    """The spec, the training (with its reference profile) and the registration of versions 1..n;
    `calibrated`: with a calibration that maps confidence to itself (the estimated accuracy is then
    the mean confidence)."""
    monitoring = EXAMPLE.monitoring.model_copy(
        update={"window_rows": WINDOW_ROWS, "window_seconds": 3600, "retrain_cooldown_seconds": 3600}
    )
    spec = EXAMPLE.model_copy(update={"model": model, "dataset": model, "monitoring": monitoring})
    train = churn_frame(3000, seed=7)
    predicted = (train["monthly_charges"] > 70).astype(int).to_numpy()
    calibration = Calibration(rows=100, confidence_knots=[0.0, 1.0], confidence_correct=[0.0, 1.0])
    profile = profiling.reference_profile(spec.features, train, predicted, task=spec.task, seed=spec.split.seed)
    if calibrated:
        profile = profile.model_copy(update={"calibration": calibration})
    artifact = ArtifactRef(name="model.skops", uri="s3://modelbus-artifacts/x", sha256="0" * 64, size_bytes=1)
    await publish(
        settings,
        ModelSpecApplied(model=model, revision=1, spec=spec, spec_yaml="-", spec_sha256="0" * 64, applied_by="it"),
        ModelTrained(
            model=model,
            run_id="run-1",
            task="classification",
            target="churned",
            dataset=model,
            dataset_version="v1",
            data_sha256="0" * 64,
            spec_revision=1,
            estimator="sklearn.linear_model.LogisticRegression",
            params={},
            metrics={"accuracy": 0.8},
            candidates=[],
            artifacts=[artifact],
            feature_schema=[FeatureSchema(name=n, kind="numeric", dtype="float64") for n in FEATURES],
            reference_profile=profile,
            code_version="t",
            training_seconds=1.0,
        ),
        *[
            ModelRegistered(
                model=model,
                version=version,
                run_id="run-1",
                dataset_version="v1",
                task="classification",
                artifacts=[artifact],
                metrics={"accuracy": 0.8},
            )
            for version in range(1, versions + 1)
        ],
    )


def predictions(
    model: str, rows: int, *, seed: int, shift: float = 0.0, per_event: int = 500
) -> list[PredictionsLogged]:
    """Live traffic as serving logs it; `shift` moves the world (as the example data's --shift)."""
    return _logged(model, churn_frame(rows, seed=seed, shift=shift), seed=seed, per_event=per_event)


def _logged(
    model: str,
    frame: Any,
    *,
    seed: int,
    per_event: int,
    version: int = 1,
    role: str = "stable",
    confidence: float = 0.7,
) -> list[PredictionsLogged]:
    now = datetime.now(UTC)
    records = []
    for i, row in enumerate(frame[FEATURES].to_dict("records")):
        features = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        label = int((row["monthly_charges"] or 0) > 70)
        records.append(
            Prediction(
                request_id=f"r-{seed}-{i}",
                model_version=version,
                role=role,  # type: ignore[arg-type]
                features=features,
                prediction=label,
                probabilities={str(label): confidence, str(1 - label): 1 - confidence},
                latency_ms=0.5,
                served_at=now,
            )
        )
    return [
        PredictionsLogged.from_records(model, f"b-{seed}-{k}", records[k : k + per_event])
        for k in range(0, len(records), per_event)
    ]


async def test_live_traffic_that_moved_is_detected_and_a_single_retrain_is_asked_for(
    monitor: MonitorService, settings: Settings
) -> None:
    model = f"churn-{uuid.uuid4().hex[:6]}"
    await a_trained_version(settings, model)

    async def knows_the_reference() -> bool:
        async with monitor.sessions() as session:
            return await monitor_store.SqlStore(session).reference_of(model, 1) is not None

    await eventually(knows_the_reference, timeout=30, what="the monitor to know version 1's reference profile")

    # Two windows from the training distribution: nothing to report.
    await publish(settings, *predictions(model, 2 * WINDOW_ROWS, seed=11, per_event=WINDOW_ROWS))

    async def windows_closed(count: int) -> bool:
        async with monitor.sessions() as session:
            rows = await session.scalars(
                select(monitor_tables.WindowRow).where(monitor_tables.WindowRow.model == model)
            )
            return len(rows.all()) >= count

    await eventually(lambda: windows_closed(2), timeout=30, what="two steady windows")
    assert await on_topic(settings, topics.DRIFT_DETECTED, model) == []

    # Then the world moves: 50 windows of shifted traffic.
    await publish(settings, *predictions(model, 50 * WINDOW_ROWS, seed=12, shift=0.6, per_event=WINDOW_ROWS))
    await eventually(lambda: windows_closed(52), timeout=90, what="52 windows closed")

    async def fifty_drifts() -> bool:
        return len(await on_topic(settings, topics.DRIFT_DETECTED, model)) >= 50

    await eventually(fifty_drifts, timeout=30, what="50 DriftDetected")
    drifts = await on_topic(settings, topics.DRIFT_DETECTED, model)
    assert len(drifts) == 50 and all(isinstance(d, DriftDetected) for d in drifts)
    first = drifts[0]
    by_feature = {f.feature: f for f in first.features}
    assert by_feature["tenure_months"].drifted and by_feature["monthly_charges"].drifted
    assert first.rows == WINDOW_ROWS and first.dataset_drift and first.severity in ("warning", "critical")
    assert {f.test for f in first.features} == {"ks", "chi2"}  # windows of 200 rows: the p-value tests
    assert all(f.p_value is not None and f.threshold == 0.05 for f in first.features)
    # What the dashboards read: the last tested window's scores, per feature.
    last, labels = drifts[-1], {"model": model, "version": "1"}
    share = monitor.metrics.get_sample_value("modelbus_monitor_drifted_share", labels)
    assert share == pytest.approx(last.drifted_share)
    for feature in last.features:
        shown = monitor.metrics.get_sample_value(
            "modelbus_monitor_drift_score", {**labels, "feature": feature.feature, "test": feature.test}
        )
        assert shown == pytest.approx(feature.score if feature.score is not None else feature.statistic)
    retrains = await on_topic(settings, topics.RETRAIN_REQUESTED, model)
    assert len(retrains) == 1, "one retrain per cooldown, however many windows drift"
    [retrain] = retrains
    assert isinstance(retrain, RetrainRequested) and retrain.reason == "drift" and retrain.requested_by == "monitor"
    async with monitor.sessions() as session:
        kept = await session.get(monitor_tables.RetrainRow, model)
    assert kept is not None and kept.suppressed >= 40
    # The history the console draws, from the monitor's API: every window, drift per feature.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=monitor.api), base_url="http://monitor") as http:
        assert (await http.get(f"/v1/models/{model}/windows")).status_code == 401
        answer = await http.get(f"/v1/models/{model}/windows", headers={"Authorization": "Bearer look"})
        assert answer.status_code == 200, answer.text
        history = answer.json()
        newest = await http.get(f"/v1/models/{model}/windows?limit=5", headers={"Authorization": "Bearer look"})
    windows = history["windows"]
    assert len(windows) == 52 and [w["dataset_drift"] for w in windows].count(True) == 50
    assert [w["started_at"] for w in windows] == sorted(w["started_at"] for w in windows)
    assert not windows[0]["dataset_drift"] and windows[-1]["dataset_drift"]
    scores = {f["feature"]: f for f in windows[-1]["features"]}
    assert scores["tenure_months"]["drifted"] and scores["tenure_months"]["p_value"] < 0.05
    assert set(history["baselines"]["1"]) >= {"accuracy"}
    assert [w["window_id"] for w in newest.json()["windows"]] == [w["window_id"] for w in windows[-5:]]


async def test_rows_that_waited_for_their_reference_are_tested_a_window_at_a_time(
    monitor: MonitorService, settings: Settings
) -> None:
    model = f"churn-{uuid.uuid4().hex[:6]}"
    # Predictions overtake the training that explains them (another topic): 1,050 rows in events
    # of 150, which no window size divides.
    await publish(settings, *predictions(model, 1050, seed=21, per_event=150))

    async def held(rows: int) -> bool:
        async with monitor.sessions() as session:
            return await monitor_store.SqlStore(session).open_rows(model, 1) >= rows

    await eventually(lambda: held(1050), timeout=30, what="1,050 rows held while the reference is unknown")
    await a_trained_version(settings, model)

    async def knows_the_reference() -> bool:
        async with monitor.sessions() as session:
            return await monitor_store.SqlStore(session).reference_of(model, 1) is not None

    await eventually(knows_the_reference, timeout=30, what="the reference profile")
    await publish(settings, *predictions(model, 150, seed=22, per_event=150))

    async def closed() -> list[int]:
        async with monitor.sessions() as session:
            rows = await session.scalars(
                select(monitor_tables.WindowRow.rows).where(monitor_tables.WindowRow.model == model)
            )
            return list(rows.all())

    await eventually(lambda: _at_least(closed, 6), timeout=30, what="six windows closed")
    assert await closed() == [WINDOW_ROWS] * 6, "1,200 rows: six windows of 200, none larger"
    async with monitor.sessions() as session:
        assert await monitor_store.SqlStore(session).open_rows(model, 1) == 0


async def _at_least(found: Any, count: int) -> bool:
    return len(await found()) >= count


@pytest.mark.parametrize(("canary_confidence", "expected"), [(0.8, "rollback"), (0.9, "advance")])
async def test_a_canary_is_judged_against_stable_and_an_estimated_accuracy_drop_rolls_it_back(
    monitor: MonitorService, settings: Settings, canary_confidence: float, expected: str
) -> None:
    model = f"churn-{uuid.uuid4().hex[:6]}"
    await a_trained_version(settings, model, versions=2, calibrated=True)
    rollout = RolloutChanged(
        model=model,
        rollout_id="ro-canary",
        candidate_version=2,
        stable_version=1,
        from_state="pending",
        to_state="canary",
        step=0,
        traffic=[
            TrafficShare(version=1, percent=90, role="stable"),
            TrafficShare(version=2, percent=10, role="canary"),
        ],
        reason="approved",
    )
    await publish(settings, rollout)

    async def live() -> bool:
        async with monitor.sessions() as session:
            found = await session.get(monitor_tables.LiveRow, model)
            return found is not None and found.state == "canary"

    await eventually(live, timeout=30, what="the monitor to see the canary")
    # Stable answers with confidence 0.9 (an expected error of 0.1); the canary with `canary_confidence`.
    frame = churn_frame(WINDOW_ROWS, seed=21)
    await publish(settings, *_logged(model, frame, seed=21, per_event=WINDOW_ROWS, confidence=0.9))

    async def stable_window() -> bool:
        async with monitor.sessions() as session:
            return await monitor_store.SqlStore(session).last_summary(model, 1) is not None

    await eventually(stable_window, timeout=30, what="a closed window of the stable version")
    canary = _logged(
        model, frame, seed=22, per_event=WINDOW_ROWS, version=2, role="canary", confidence=canary_confidence
    )
    await publish(settings, *canary)

    async def analysed() -> bool:
        return bool(await on_topic(settings, topics.CANARY_ANALYZED, model))

    await eventually(analysed, timeout=30, what="CanaryAnalyzed")
    [analysis] = await on_topic(settings, topics.CANARY_ANALYZED, model)
    assert isinstance(analysis, CanaryAnalyzed) and analysis.verdict == expected, analysis.reason
    assert analysis.rollout_id == "ro-canary" and analysis.candidate_samples == WINDOW_ROWS
    estimated = next(c for c in analysis.comparisons if c.metric == "estimated_accuracy")
    # Scores are counted in buckets of 1/8192 (services.monitor.estimate): the estimate is exact to that.
    assert estimated.stable == pytest.approx(0.9, abs=1e-3)
    assert estimated.candidate == pytest.approx(canary_confidence, abs=1e-3)
    assert estimated.passed == (expected == "advance") and estimated.test == "cbpe"
    assert {c.metric for c in analysis.comparisons} == {
        "missing_predictions",
        "probabilities_out_of_range",
        "distinct_predictions",
        "latency_p99_ms",
        "estimated_accuracy",
        "prediction_distance",
    }


async def test_labels_join_the_answers_and_a_live_accuracy_drop_is_reported_once_enough_arrive(
    monitor: MonitorService, settings: Settings
) -> None:
    model = f"churn-{uuid.uuid4().hex[:6]}"
    await a_trained_version(settings, model)  # validation accuracy 0.8; the spec watches accuracy, max drop 0.05
    served = predictions(model, WINDOW_ROWS, seed=31, per_event=WINDOW_ROWS)
    await publish(settings, *served)
    answers = [p for batch in served for p in batch.records()]

    async def kept() -> bool:
        async with monitor.sessions() as session:
            found = await session.scalar(
                select(func.sum(monitor_tables.AnswerSegmentRow.rows)).where(
                    monitor_tables.AnswerSegmentRow.model == model
                )
            )
            return found == WINDOW_ROWS

    await eventually(kept, timeout=30, what="the answers kept for labels")
    # 150 labels: the first 75 agree with the answer, the next 75 do not (live accuracy 0.5), plus one
    # label for a request that was never served.
    truths = [Label(request_id=p.request_id, label=p.prediction, observed_at=datetime.now(UTC)) for p in answers[:75]]
    truths += [
        Label(request_id=p.request_id, label=1 - int(p.prediction), observed_at=datetime.now(UTC))
        for p in answers[75:150]
    ]
    truths.append(Label(request_id="never-served", label=1, observed_at=datetime.now(UTC)))
    await publish(settings, LabelsArrived(model=model, labels=truths))

    async def measured() -> list[Event]:
        # The window closed before any label: its estimate (CBPE) may have spoken already, marked so.
        found = await on_topic(settings, topics.PERFORMANCE_DEGRADED, model)
        return [e for e in found if isinstance(e, PerformanceDegraded) and not e.estimated]

    async def degraded() -> bool:
        return bool(await measured())

    await eventually(degraded, timeout=30, what="PerformanceDegraded")
    [report] = await measured()
    assert isinstance(report, PerformanceDegraded)
    assert (report.metric, report.version, report.labelled_rows) == ("accuracy", 1, 150)
    assert report.value == pytest.approx(0.5) and report.baseline == pytest.approx(0.8)
    assert report.threshold == pytest.approx(0.75)
    [retrain] = await on_topic(settings, topics.RETRAIN_REQUESTED, model)
    assert isinstance(retrain, RetrainRequested) and retrain.reason == "performance"
