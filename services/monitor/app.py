"""The monitor: windows of live predictions per model version, drift against the training reference,
and the retrain policy.

Consumes specs (the monitoring policy), `ModelTrained` (the reference profile, never recomputed
from raw data), `ModelRegistered` (which run a version is), `RolloutChanged` (what is live) and
`PredictionsLogged` (in batches: every one of a poll in one call). Their rows go to the open window
of each version they cover, in the transaction that claims them; the window closes at the policy's row count
(or age, checked by a sweep), is tested, kept in `monitor_windows`, and announced as
`DriftDetected` when a feature or the prediction drifted. A dataset-level drift asks for a retrain
(`RetrainRequested`), at most once per cooldown per model however many windows drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.monitor import store, windows
from services.monitor.windows import Drifted
from shared.contract import topics
from shared.contract.envelope import Envelope
from shared.contract.events import (
    CanaryAnalyzed,
    DriftDetected,
    LabelsArrived,
    MetricComparison,
    ModelRegistered,
    ModelSpecApplied,
    ModelTrained,
    PerformanceDegraded,
    PredictionsLogged,
    RetrainRequested,
    RolloutChanged,
)
from shared.contract.spec import ModelSpec, Monitoring, Rollout
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.metrics import LOWER_IS_BETTER, live_metrics
from shared.runtime.settings import Settings
from shared.runtime.telemetry import make_tracer_provider
from shared.runtime.uow import HandlerContext

log = logging.getLogger("modelbus.monitor")
GROUP = "monitor"
SWEEP_SECONDS = 5.0
SPEC_CACHE_SECONDS = 5.0
# A window whose version's reference profile (or spec) is not known yet waits for it, up to this
# many windows' worth of rows (at least UNTESTED_ROWS); then it closes untested, so what a close
# reads back stays bounded.
UNTESTED_WINDOWS = 10
UNTESTED_ROWS = 100_000


@dataclass
class Metrics:
    """The monitor's Prometheus metrics."""

    registry: CollectorRegistry
    rows: Counter = field(init=False)
    windows: Counter = field(init=False)
    drift_seconds: Histogram = field(init=False)
    drift_score: Gauge = field(init=False)
    drifted_share: Gauge = field(init=False)

    def __post_init__(self) -> None:
        self.rows = Counter(
            "modelbus_monitor_rows", "Prediction rows added to windows.", ["model"], registry=self.registry
        )
        self.windows = Counter(
            "modelbus_monitor_windows", "Windows closed, by outcome.", ["model", "outcome"], registry=self.registry
        )
        self.drift_seconds = Histogram(
            "modelbus_monitor_drift_seconds",
            "Time to test a window.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.drift_score = Gauge(
            "modelbus_monitor_drift_score",
            "Drift of each feature (and __prediction__) in the last tested window: distance, or test statistic.",
            ["model", "version", "feature", "test"],
            registry=self.registry,
        )
        self.drifted_share = Gauge(
            "modelbus_monitor_drifted_share",
            "Share of features that drifted in the last tested window.",
            ["model", "version"],
            registry=self.registry,
        )

    def tested(self, model: str, version: int, found: Drifted) -> None:
        """Keep a tested window's scores for the dashboards."""
        for feature in [*found.features, *([found.prediction] if found.prediction else [])]:
            score = feature.score if feature.score is not None else feature.statistic
            self.drift_score.labels(model, str(version), feature.feature, feature.test).set(score)
        self.drifted_share.labels(model, str(version)).set(found.drifted_share)


@dataclass
class Monitor:
    """Window bookkeeping and the decisions taken when a window closes."""

    bus: Bus
    metrics: Metrics
    label_horizon: timedelta = timedelta(days=7)
    specs: dict[str, tuple[float, ModelSpec | None]] = field(default_factory=dict)

    async def spec(self, session: AsyncSession, model: str) -> ModelSpec | None:
        """The model's spec, read at most once per SPEC_CACHE_SECONDS (a spec changes rarely)."""
        cached = self.specs.get(model)
        now = time.monotonic()
        if cached is not None and now - cached[0] < SPEC_CACHE_SECONDS:
            return cached[1]
        found = await store.specs.of(session, model)
        if found is not None:  # a spec not there yet may arrive any moment: ask again next time
            self.specs[model] = (now, found)
        return found

    async def add(self, session: AsyncSession, events: Sequence[PredictionsLogged], cause: Envelope) -> None:
        """Add the events' rows to each version's open window, closing windows as they fill.

        Called with every PredictionsLogged of one poll: the answers go to the label join in one
        COPY, and each version's rows go to its window in as few chunks as the windows allow (a
        window never takes more than the policy's `window_rows` once it can be tested).
        """
        await store.add_served(session, [answer for event in events for answer in _answers(event)])
        by_version: dict[tuple[str, int], list[windows.Columns]] = defaultdict(list)
        for event in events:
            columns = windows.columns_of(event)
            versions = np.array(event.model_version)
            for version in np.unique(versions).tolist():
                same = versions == version
                by_version[event.model, version].append(
                    columns if same.all() else windows.take(columns, np.flatnonzero(same))
                )
        for (model, version), parts in sorted(by_version.items()):
            spec = await self.spec(session, model)
            columns = windows.concatenate(parts) if len(parts) > 1 else parts[0]
            await self._fill(session, model, version, columns, spec.monitoring if spec else Monitoring(), cause)

    async def _fill(
        self,
        session: AsyncSession,
        model: str,
        version: int,
        columns: windows.Columns,
        policy: Monitoring,
        cause: Envelope,
    ) -> None:
        """Add one version's rows to its open window, a window's worth at a time."""
        held = await store.open_rows(session, model, version)
        rows, taken = windows.rows_of(columns), 0
        while taken < rows:
            room = policy.window_rows - held
            # A window that cannot be tested yet (see close) takes what comes, up to its own limit.
            size = min(room, rows - taken) if room > 0 else rows - taken
            part = columns if size == rows else windows.take(columns, slice(taken, taken + size))
            taken += size
            first, last = windows.span(part)
            window = await store.add_chunk(session, model, version, part, size, first, last)
            self.metrics.rows.labels(model).inc(size)
            age = (datetime.now(UTC) - window.first_at).total_seconds() if window.first_at else 0.0
            if windows.should_close(window.rows, age, policy):
                await self.close(session, window, policy, cause)
            held = window.rows

    async def close(
        self, session: AsyncSession, window: store.OpenWindow, policy: Monitoring, cause: Envelope | None
    ) -> None:
        """Test a window, keep its results, announce drift and ask for a retrain if the policy says so.

        ModelTrained and PredictionsLogged travel on different topics: while the version's reference
        (or the model's spec) is unknown, the window stays open, up to UNTESTED_WINDOWS windows' rows.
        """
        model, version = window.model, window.version
        known = await store.reference_of(session, model, version) is not None
        known = known and await self.spec(session, model) is not None
        if not known and window.rows < max(UNTESTED_WINDOWS * policy.window_rows, UNTESTED_ROWS):
            return
        columns = windows.concatenate(await store.take_chunks(session, model, version))
        window.rows, window.first_at, window.last_at = 0, None, None
        if not columns:
            return
        total, size = windows.rows_of(columns), policy.window_rows
        if not known or total <= size:  # one window: full, closed by age, or closed untested
            await self._test(session, model, version, columns, policy, cause)
            return
        # A window that waited for its reference holds several windows' rows: each full window is
        # tested on its own, and what is left over stays open.
        whole = total - total % size
        if whole < total:
            await session.flush()  # the emptied window first, then the rest goes back into it
            rest = windows.take(columns, slice(whole, total))
            await store.add_chunk(session, model, version, rest, total - whole, *windows.span(rest))
        for start in range(0, whole, size):
            await self._test(session, model, version, windows.take(columns, slice(start, start + size)), policy, cause)

    async def _test(
        self,
        session: AsyncSession,
        model: str,
        version: int,
        columns: windows.Columns,
        policy: Monitoring,
        cause: Envelope | None,
    ) -> None:
        """Test one closed window's rows: canary analysis, drift, and what follows from them."""
        rows = windows.rows_of(columns)
        started, ended = windows.span(columns)
        window_id = f"win-{uuid.uuid4().hex[:16]}"
        summary = windows.summarize(columns)
        await self.analyse_canary(session, model, version, summary, started, ended, cause)

        def kept(drifted_share: float | None, dataset_drift: bool, result: dict[str, Any]) -> store.WindowRow:
            return store.WindowRow(
                window_id=window_id,
                model=model,
                version=version,
                started_at=started,
                ended_at=ended,
                rows=rows,
                drifted_share=drifted_share,
                dataset_drift=dataset_drift,
                result={**result, "summary": summary.as_dict()},
            )

        reference = await store.reference_of(session, model, version)
        if reference is None:
            log.warning("%s@%d: window of %d rows closed untested: no reference profile known", model, version, rows)
            await store.record_window(session, kept(None, False, {"untested": "no reference profile for this version"}))
            self.metrics.windows.labels(model, "untested").inc()
            return
        began = time.perf_counter()
        found = await asyncio.to_thread(windows.window_drift, reference.profile, columns, policy)
        seconds = time.perf_counter() - began
        self.metrics.drift_seconds.observe(seconds)
        self.metrics.tested(model, version, found)
        result = {
            "features": [f.model_dump() for f in found.features],
            "prediction": found.prediction.model_dump() if found.prediction else None,
            "missing": found.missing,
            "seconds": seconds,
        }
        await store.record_window(session, kept(found.drifted_share, found.dataset_drift, result))
        drifted = [f.feature for f in found.features if f.drifted]
        prediction_drifted = bool(found.prediction and found.prediction.drifted)
        log.info(
            "%s@%d window %s: %d rows, %d/%d features drifted%s in %.3f s",
            model,
            version,
            window_id,
            rows,
            len(drifted),
            len(found.features),
            ", prediction drifted" if prediction_drifted else "",
            seconds,
        )
        if not drifted and not prediction_drifted:
            self.metrics.windows.labels(model, "steady").inc()
            return
        self.metrics.windows.labels(model, "drifted").inc()
        detected = DriftDetected(
            model=model,
            version=version,
            window_id=window_id,
            window_start=started,
            window_end=ended,
            rows=rows,
            features=found.features,
            prediction=found.prediction,
            drifted_share=found.drifted_share,
            dataset_drift=found.dataset_drift,
            severity=windows.severity(found),
        )
        detected_id = self.bus.stage(session, detected, cause=cause)
        if not found.dataset_drift or "drift" not in policy.retrain_on:
            return
        if not await store.retrain_allowed(session, model, datetime.now(UTC), policy.retrain_cooldown_seconds, "drift"):
            log.info("%s: drift again, retrain not asked (cooldown %.0f s)", model, policy.retrain_cooldown_seconds)
            return
        retrain = RetrainRequested(model=model, reason="drift", requested_by="monitor", cause_event_id=detected_id)
        self.bus.stage(session, retrain, cause=cause)
        log.info("%s: retrain requested (drift in %s)", model, ", ".join(drifted[:8]))

    async def analyse_canary(
        self,
        session: AsyncSession,
        model: str,
        version: int,
        summary: windows.Summary,
        started: datetime,
        ended: datetime,
        cause: Envelope | None,
    ) -> None:
        """When a running canary's window closes: compare it with the stable version's last window."""
        live = await session.get(store.LiveRow, model)
        if live is None or live.state not in ("canary", "shadow") or live.candidate != version:
            return
        spec = await self.spec(session, model)
        rollout = spec.rollout if spec is not None else None
        stable = await store.last_summary(session, model, live.stable) if live.stable is not None else None
        if stable is None:
            comparisons: list[windows.Comparison] = []
            outcome: windows.Verdict
            outcome, reason = "hold", f"no closed window of the stable version {live.stable} to compare with yet"
        else:
            policy = rollout if rollout is not None else Rollout()
            comparisons = windows.compare(summary, windows.Summary.from_dict(stable), policy)
            outcome, reason = windows.verdict(comparisons, summary.rows, policy.min_samples)
        analysed = CanaryAnalyzed(
            model=model,
            rollout_id=live.rollout_id,
            candidate_version=version,
            stable_version=live.stable,
            verdict=outcome,
            comparisons=[
                MetricComparison(
                    metric=c.metric, candidate=c.candidate, stable=c.stable, threshold=c.threshold, passed=c.passed
                )
                for c in comparisons
            ],
            candidate_samples=summary.rows,
            stable_samples=int(stable["rows"]) if stable else 0,
            window_start=started,
            window_end=ended,
            reason=reason,
        )
        self.bus.stage(session, analysed, cause=cause)
        log.info("%s: canary v%d analysed: %s (%s)", model, version, outcome, reason)

    async def labelled(self, session: AsyncSession, event: LabelsArrived, cause: Envelope) -> None:
        """Join labels to what was served; judge a version's live performance once it has enough labels."""
        now = datetime.now(UTC)
        truths = {label.request_id: str(label.label) for label in event.labels}
        versions = await store.label(session, event.model, truths, now, self.label_horizon)
        spec = await self.spec(session, event.model)
        if spec is None:
            return
        watch = spec.monitoring.performance
        metric = watch.metric or spec.selection_metric
        for version in versions:
            if await store.labelled_pending(session, event.model, version) < watch.min_labels:
                continue
            rows = await store.take_labelled(session, event.model, version)
            reference = await store.reference_of(session, event.model, version)
            if reference is None or metric not in reference.metrics:
                continue
            scores = [s for _, _, s in rows]
            measured = live_metrics(
                reference.task,
                [t for t, _, _ in rows],
                [p for _, p, _ in rows],
                scores if all(s is not None for s in scores) else None,  # type: ignore[arg-type]
            )
            if metric not in measured:
                continue
            value, baseline = measured[metric], reference.metrics[metric]
            worse = value - baseline if metric in LOWER_IS_BETTER else baseline - value
            log.info(
                "%s@%d live %s %.4f over %d labels (validation %.4f)",
                event.model,
                version,
                metric,
                value,
                len(rows),
                baseline,
            )
            if worse <= watch.max_drop:
                continue
            threshold = baseline + watch.max_drop if metric in LOWER_IS_BETTER else baseline - watch.max_drop
            degraded = PerformanceDegraded(
                model=event.model,
                version=version,
                window_id=f"perf-{uuid.uuid4().hex[:16]}",
                metric=metric,
                value=value,
                baseline=baseline,
                threshold=threshold,
                labelled_rows=len(rows),
                severity=spec.alerts.severity,
            )
            degraded_id = self.bus.stage(session, degraded, cause=cause)
            policy = spec.monitoring
            if "performance" in policy.retrain_on and await store.retrain_allowed(
                session, event.model, now, policy.retrain_cooldown_seconds, "performance"
            ):
                retrain = RetrainRequested(
                    model=event.model, reason="performance", requested_by="monitor", cause_event_id=degraded_id
                )
                self.bus.stage(session, retrain, cause=cause)

    async def sweep(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Close the windows that have aged past their policy's `window_seconds`; returns how many."""
        closed = 0
        async with sessions() as session:
            aged = await store.aged_windows(session, datetime.now(UTC))
        for model, version, age in aged:
            async with sessions() as session, session.begin():
                spec = await self.spec(session, model)
                policy = spec.monitoring if spec is not None else Monitoring()
                if age < policy.window_seconds:
                    continue
                window = await store.lock_window(session, model, version)
                if window is None or not window.first_at:
                    continue
                real_age = (datetime.now(UTC) - window.first_at).total_seconds()
                if windows.should_close(window.rows, real_age, policy):
                    await self.close(session, window, policy, None)
                    closed += 1
        async with sessions() as session, session.begin():
            await store.forget_served(session, datetime.now(UTC) - self.label_horizon)
        if closed:
            self.bus.wake_relay()
        return closed


def _answers(event: PredictionsLogged) -> list[tuple[str, int, str, str, float | None, datetime]]:
    """The batch's returned answers for the label join: (model, version, request id, prediction,
    score, served at); the score is the probability of the positive class (the last in sorted
    order), for ROC-AUC. Shadow answers were never returned, so labels do not judge them."""
    scores = event.probabilities[max(event.probabilities)] if event.probabilities else [None] * event.rows
    return [
        (event.model, version, request_id, str(prediction), score, at)
        for request_id, version, role, prediction, score, at in zip(
            event.request_id, event.model_version, event.role, event.prediction, scores, event.served_at, strict=True
        )
        if role != "shadow"
    ]


def register_consumers(bus: Bus, monitor: Monitor, *, group: str = GROUP) -> None:
    """Subscribe the monitor to specs, training, registrations, rollouts and predictions."""

    @bus.consumer(topics.MODEL_SPEC_APPLIED, group=group, events=[ModelSpecApplied])
    async def on_spec(event: ModelSpecApplied, ctx: HandlerContext) -> None:
        await store.specs.keep(ctx.session, event)
        monitor.specs.pop(event.model, None)

    @bus.consumer(topics.MODEL_TRAINED, group=group, events=[ModelTrained])
    async def on_trained(event: ModelTrained, ctx: HandlerContext) -> None:
        await store.keep_run(ctx.session, event.model, event.run_id, event.task, event.reference_profile, event.metrics)

    @bus.consumer(topics.MODEL_REGISTERED, group=group, events=[ModelRegistered])
    async def on_registered(event: ModelRegistered, ctx: HandlerContext) -> None:
        await store.keep_version(ctx.session, event.model, event.version, event.run_id)

    @bus.consumer(topics.ROLLOUT_CHANGED, group=group, events=[RolloutChanged])
    async def on_rollout(event: RolloutChanged, ctx: HandlerContext) -> None:
        await store.keep_live(
            ctx.session, event.model, event.rollout_id, event.to_state, event.candidate_version, event.stable_version
        )

    @bus.consumer(topics.LABELS_ARRIVED, group=group, events=[LabelsArrived])
    async def on_labels(event: LabelsArrived, ctx: HandlerContext) -> None:
        await monitor.labelled(ctx.session, event, ctx.envelope)

    @bus.consumer(topics.PREDICTIONS_LOGGED, group=group, events=[PredictionsLogged], batched=True)
    async def on_predictions(events: list[PredictionsLogged], ctx: HandlerContext) -> None:
        await monitor.add(ctx.session, events, ctx.envelope)


@dataclass
class MonitorService:
    """One monitor process."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    monitor: Monitor
    metrics: CollectorRegistry
    sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start consuming, and the sweep that closes windows by age."""
        await self.bus.start()
        self.sweeper = asyncio.create_task(self._sweep_forever(), name="monitor-sweep")

    async def stop(self) -> None:
        """Stop the sweep and the bus; close the database."""
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        await self.bus.stop()
        await self.engine.dispose()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.monitor.sweep(self.sessions)
            except Exception:
                log.exception("window sweep failed; trying again")


def build(settings: Settings, *, group: str = GROUP) -> MonitorService:
    """The composition root of a monitor process."""
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    registry = CollectorRegistry()
    bus = Bus(settings, sessions=sessions, tracer_provider=make_tracer_provider(settings), registry=registry)
    monitor = Monitor(bus, Metrics(registry), timedelta(seconds=settings.monitor_label_horizon_seconds))
    register_consumers(bus, monitor, group=group)
    return MonitorService(
        settings=settings, engine=engine, sessions=sessions, bus=bus, monitor=monitor, metrics=registry
    )
