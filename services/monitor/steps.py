"""What the monitor does with what arrives, step by step: predictions fill each version's open
window; a full (or old) window is tested for drift and, for a running canary, compared with the
stable version; labels join the answers they judge and live performance is judged; answers and
labels past the horizon are expired. The handlers (services.monitor.handlers) and the sweep's
commands call these with their unit of work's store and `emit`, so both run the very same code.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from services.monitor import canary, domain, feedback, retrains, windows
from services.monitor.metrics import Metrics
from services.monitor.records import Ledger, realised
from services.monitor.segments import Answers
from services.monitor.store import ClosedWindow, Joined, MonitorStore, Reference, Window
from shared.contract.events import (
    CanaryAnalyzed,
    DriftDetected,
    Event,
    LabelsArrived,
    MetricComparison,
    PredictionsLogged,
)
from shared.contract.spec import ModelSpec, Monitoring, Rollout
from shared.runtime.metrics import live_metrics
from shared.runtime.uow import UnitOfWork

log = logging.getLogger("modelbus.monitor")
SPEC_CACHE_SECONDS = 5.0
REFERENCE_CACHE_SIZE = 2048
Emit = Callable[[Event], str]
UoW = UnitOfWork[MonitorStore]


@dataclass
class Watch:
    """What the monitor's handlers share in one process: its metrics, the label horizon, a
    short-lived cache of specs (a spec changes rarely; predictions arrive all the time) and a cache
    of reference profiles (a version's reference never changes once known)."""

    metrics: Metrics
    label_horizon: timedelta = timedelta(days=7)
    label_wait: timedelta | None = None  # how long a label waits for its answer; None: the horizon
    specs: dict[str, tuple[float, ModelSpec | None]] = field(default_factory=dict)
    sink: feedback.Sink | None = None  # where feedback datasets are written; None: feedback is off
    references: OrderedDict[tuple[str, int], Reference] = field(default_factory=OrderedDict)

    async def spec(self, store: MonitorStore, model: str) -> ModelSpec | None:
        """The model's spec, read at most once per SPEC_CACHE_SECONDS."""
        cached = self.specs.get(model)
        now = time.monotonic()
        if cached is not None and now - cached[0] < SPEC_CACHE_SECONDS:
            return cached[1]
        found = await store.spec_of(model)
        if found is not None:  # a spec not there yet may arrive any moment: ask again next time
            self.specs[model] = (now, found)
        return found

    async def reference(self, store: MonitorStore, model: str, version: int) -> Reference | None:
        """The version's reference profile; once found it is kept (the first run's profile stands,
        and a version's run never changes), the newest REFERENCE_CACHE_SIZE of them."""
        key = (model, version)
        found = self.references.get(key)
        if found is not None:
            self.references.move_to_end(key)
            return found
        found = await store.reference_of(model, version)
        if found is not None:
            self.references[key] = found
            if len(self.references) > REFERENCE_CACHE_SIZE:
                self.references.popitem(last=False)
        return found


# ---------------------------------------------------------------- windows


async def add(store: MonitorStore, watch: Watch, events: Sequence[PredictionsLogged], emit: Emit) -> None:
    """Add the events' rows to each version's open window, closing windows as they fill.

    Called with every PredictionsLogged of one poll: the answers go to the label join in one
    statement, and each version's rows go to its window in as few chunks as the windows allow (a
    window never takes more than the policy's `window_rows` once it can be tested). The answers
    reuse the columns' instants (each converted once).
    """
    keeps = {}
    for model in sorted({e.model for e in events}):
        spec = await watch.spec(store, model)
        keeps[model] = spec is not None and spec.monitoring.feedback is not None
    by_version: dict[tuple[str, int], list[windows.Columns]] = defaultdict(list)
    served_at = []
    for event in events:
        columns = windows.columns_of(event)
        served_at.append(columns[windows.SERVED_AT])
        versions = np.array(event.model_version)
        for version in np.unique(versions).tolist():
            same = versions == version
            by_version[event.model, version].append(
                columns if same.all() else windows.take(columns, np.flatnonzero(same))
            )
    served = Answers.of_events((e, keeps[e.model], at) for e, at in zip(events, served_at, strict=True))
    now = datetime.now(UTC)
    met = await _keep_answers(store, served, now)
    for (model, version), parts in sorted(by_version.items()):
        spec = await watch.spec(store, model)
        columns = windows.concatenate(parts) if len(parts) > 1 else parts[0]
        await fill(store, watch, model, version, columns, spec.monitoring if spec else Monitoring(), emit)
    # Answers that met labels waiting for them: counted in the windows that just closed (`test`
    # reads the labelled answers), judged as labels that meet their answers are.
    for model, joined in sorted(met.items()):
        await judge(store, watch, model, joined, emit, now)


async def _keep_answers(store: MonitorStore, served: list[Answers], now: datetime) -> dict[str, list[Joined]]:
    """Keep a poll's answers for the label join, attach the labels that came before them, and count
    both in each model's ledger; the answers labelled, per model."""
    await store.add_served(served)
    met = await store.meet_labels(served, now) if served else {}
    logged = {batch.model: len(batch) for batch in served}
    for model in sorted(logged):
        found = met.get(model)
        labelled = len(found.answers) if found else 0
        await store.count(
            model, {"joined": found.labels if found else 0}, {"logged": logged[model], "labelled": labelled}
        )
    return {m: found.answers for m, found in met.items() if found.answers}


async def fill(
    store: MonitorStore,
    watch: Watch,
    model: str,
    version: int,
    columns: windows.Columns,
    policy: Monitoring,
    emit: Emit,
) -> None:
    """Add one version's rows to its open window, a window's worth at a time.

    A whole window's worth arriving while the open window is empty is tested at once, never stored
    (when the version's reference and the spec are known): under load, that is most windows.
    """
    held = await store.open_rows(model, version)
    rows, taken = windows.rows_of(columns), 0
    testable = await watch.spec(store, model) is not None and await watch.reference(store, model, version) is not None
    while taken < rows:
        room = policy.window_rows - held
        # A window that cannot be tested yet (see close) takes what comes, up to its own limit.
        size = min(room, rows - taken) if room > 0 else rows - taken
        part = columns if size == rows else windows.take(columns, slice(taken, taken + size))
        taken += size
        watch.metrics.rows.labels(model).inc(size)
        if testable and held == 0 and size >= policy.window_rows:
            await test(store, watch, model, version, part, policy, emit)
            continue
        first, last = windows.span(part)
        window = await store.add_chunk(model, version, part, size, first, last)
        held = window.rows
        age = (datetime.now(UTC) - window.first_at).total_seconds() if window.first_at else 0.0
        if domain.should_close(window.rows, age, policy):
            held = await close(store, watch, window, policy, emit)


async def close(store: MonitorStore, watch: Watch, window: Window, policy: Monitoring, emit: Emit) -> int:
    """Test a window, keep its results, announce drift and ask for a retrain if the policy says so;
    returns the rows the window holds afterwards.

    ModelTrained and PredictionsLogged travel on different topics: while the version's reference
    (or the model's spec) is unknown, the window stays open, up to UNTESTED_WINDOWS windows' rows.
    """
    model, version = window.model, window.version
    known = await watch.reference(store, model, version) is not None
    known = known and await watch.spec(store, model) is not None
    if not known and domain.waits_for_reference(window.rows, policy):
        return window.rows
    columns = windows.concatenate(await store.take_chunks(model, version))
    if not columns:
        return 0
    total, size = windows.rows_of(columns), policy.window_rows
    if not known or total <= size:  # one window: full, closed by age, or closed untested
        await test(store, watch, model, version, columns, policy, emit)
        return 0
    # A window that waited for its reference holds several windows' rows: each full window is
    # tested on its own, and what is left over stays open.
    whole, held = total - total % size, 0
    if whole < total:
        rest = windows.take(columns, slice(whole, total))
        held = (await store.add_chunk(model, version, rest, total - whole, *windows.span(rest))).rows
    for start in range(0, whole, size):
        await test(store, watch, model, version, windows.take(columns, slice(start, start + size)), policy, emit)
    return held


async def test(
    store: MonitorStore,
    watch: Watch,
    model: str,
    version: int,
    columns: windows.Columns,
    policy: Monitoring,
    emit: Emit,
) -> None:
    """Test one closed window's rows: drift, the estimated performance, canary analysis, and what
    follows from them."""
    rows = windows.rows_of(columns)
    started, ended = windows.span(columns)
    window_id = f"win-{uuid.uuid4().hex[:16]}"
    reference = await watch.reference(store, model, version)

    # Answers of the window labelled before it closed count in it now; the ones labelled later
    # count when their labels come (add_realised).
    labelled_already = await store.labelled_between(model, version, started, ended)

    def kept(drifted_share: float | None, dataset_drift: bool, result: dict[str, Any]) -> ClosedWindow:
        result = realised(result, started, ended, [j for j in labelled_already if j.role != "shadow"])
        return ClosedWindow(window_id, model, version, started, ended, rows, drifted_share, dataset_drift, result)

    if reference is None:
        summary = windows.summarize(columns)
        await analyse_canary(store, watch, model, version, summary, (started, ended), labelled_already, emit)
        log.warning("%s@%d: window of %d rows closed untested: no reference profile known", model, version, rows)
        untested = {"untested": "no reference profile for this version", "summary": summary.as_dict()}
        await store.record_window(kept(None, False, untested))
        watch.metrics.windows.labels(model, "untested").inc()
        return
    began = time.perf_counter()
    found = await asyncio.to_thread(windows.window_drift, reference.profile, columns, policy)
    seconds = time.perf_counter() - began
    watch.metrics.drift_seconds.observe(seconds)
    watch.metrics.tested(model, version, found)
    drifted = [f.feature for f in found.features if f.drifted]
    prediction_drifted = bool(found.prediction and found.prediction.drifted)
    summary = windows.summarize(columns, reference.profile.calibration, drifted=found.dataset_drift)
    await analyse_canary(store, watch, model, version, summary, (started, ended), labelled_already, emit)
    result = {
        "features": [f.model_dump() for f in found.features],
        "prediction": found.prediction.model_dump() if found.prediction else None,
        "missing": found.missing,
        "seconds": seconds,
        "estimated": summary.estimated,
        "summary": summary.as_dict(),
    }
    await store.record_window(kept(found.drifted_share, found.dataset_drift, result))
    log.info(
        "%s@%d window %s: %d rows, %d/%d features drifted%s%s in %.3f s",
        model,
        version,
        window_id,
        rows,
        len(drifted),
        len(found.features),
        ", prediction drifted" if prediction_drifted else "",
        "".join(f", estimated {k} {v:.4f}" for k, v in summary.estimated.items()),
        seconds,
    )
    spec = await watch.spec(store, model)
    degraded = await estimated_performance(store, spec, model, version, window_id, summary, reference.metrics, emit)
    if drifted or prediction_drifted:
        watch.metrics.windows.labels(model, "drifted").inc()
        detected_id = emit(
            DriftDetected(
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
                severity=domain.severity(found),
                estimated=summary.estimated,
            )
        )
        if spec is not None and domain.retrain_on_drift(found, policy):
            await retrains.ask_retrain(store, watch.sink, model, version, "drift", detected_id, (started, ended), emit)
    else:
        watch.metrics.windows.labels(model, "steady").inc()
    # Drift asks first; within the cooldown that follows, the estimate asks nothing more.
    if degraded is not None and spec is not None and "performance" in policy.retrain_on:
        await retrains.ask_retrain(store, watch.sink, model, version, "performance", degraded, (started, ended), emit)


async def estimated_performance(
    store: MonitorStore,
    spec: ModelSpec | None,
    model: str,
    version: int,
    window_id: str,
    summary: canary.Summary,
    baselines: dict[str, float],
    emit: Emit,
) -> str | None:
    """With no labels for the version, its estimated performance (CBPE) is the performance signal:
    a drop beyond the policy announces PerformanceDegraded, marked estimated. Returns its id."""
    if spec is None or not summary.estimated or await store.ever_labelled(model, version):
        return None
    watch = spec.monitoring.performance
    metric = watch.metric or spec.selection_metric
    if metric not in summary.estimated or metric not in baselines:
        return None
    worse = domain.degradation(metric, summary.estimated[metric], baselines[metric], watch)
    if worse is None:
        return None
    log.info("%s@%d: estimated %s %.4f against %.4f at validation", model, version, metric, worse.value, worse.baseline)
    return emit(
        worse.event(model, version, window_id, spec.alerts.severity, labelled_rows=0, estimated=True, rows=summary.rows)
    )


# ---------------------------------------------------------------- canary analysis


async def analyse_canary(
    store: MonitorStore,
    watch: Watch,
    model: str,
    version: int,
    summary: canary.Summary,
    span: tuple[datetime, datetime],
    labelled: list[Joined],
    emit: Emit,
) -> None:
    """When a running canary's window closes: compare it with the stable version, on labels where
    both have them in the window's time slice (`labelled`: the candidate's, read once for the
    window), else on label-free evidence."""
    started, ended = span
    live = await store.live_of(model)
    if live is None or live.state not in ("canary", "shadow") or live.candidate != version:
        return
    spec = await watch.spec(store, model)
    policy = spec.rollout if spec is not None else Rollout()
    stable = await store.last_summary(model, live.stable) if live.stable is not None else None
    comparisons: list[canary.Comparison] = []
    outcome: canary.Verdict
    if stable is None or live.stable is None:
        outcome, reason = "hold", f"no closed window of the stable version {live.stable} to compare with yet"
    else:
        reference = await watch.reference(store, model, version)
        task = reference.task if reference is not None else "classification"
        pairs = canary.Labelled(
            candidate=_triples(labelled),
            stable=_triples(await store.labelled_between(model, live.stable, started, ended)),
        )
        comparisons = canary.compare(summary, canary.Summary.from_dict(stable), policy, task=task, labelled=pairs)
        outcome, reason = canary.verdict(comparisons, summary.rows, policy.min_samples)
    analysed = CanaryAnalyzed(
        model=model,
        rollout_id=live.rollout_id,
        candidate_version=version,
        stable_version=live.stable,
        verdict=outcome,
        comparisons=[
            MetricComparison(
                metric=c.metric,
                candidate=c.candidate,
                stable=c.stable,
                threshold=c.threshold,
                passed=c.passed,
                test=c.test,
                low=c.low,
                high=c.high,
                confidence=canary.CONFIDENCE if c.low is not None else None,
                candidate_samples=c.candidate_samples,
                stable_samples=c.stable_samples,
                outcome=c.outcome,
            )
            for c in comparisons
        ],
        candidate_samples=summary.rows,
        stable_samples=int(stable["rows"]) if stable else 0,
        window_start=started,
        window_end=ended,
        reason=reason,
    )
    emit(analysed)
    log.info("%s: canary v%d analysed: %s (%s)", model, version, outcome, reason)


def _triples(joined: list[Joined]) -> list[tuple[str, str, str]]:
    return [(j.request_id, j.prediction, j.label) for j in joined]


# ---------------------------------------------------------------- labels


async def labelled(
    store: MonitorStore, watch: Watch, events: Sequence[tuple[LabelsArrived, str | None]], emit: Emit
) -> None:
    """Keep the labels for the horizon and join them to the answers already served (the answers
    still to come meet them in `add`); count them in the ledger; judge what they labelled. Each
    label carries the id of the event that brought it (its batch); a request id labelled twice in
    the poll counts as a duplicate, and the first label stands."""
    now = datetime.now(UTC)
    by_model: dict[str, dict[str, tuple[str, str | None]]] = defaultdict(dict)
    received: dict[str, int] = defaultdict(int)
    for event, batch in events:
        received[event.model] += len(event.labels)
        truths = by_model[event.model]
        for label in event.labels:
            truths.setdefault(label.request_id, (str(label.label), batch))
    for model, truths in sorted(by_model.items()):
        parked = await store.park_labels(model, truths, now, watch.label_horizon)
        repeated = received[model] - len(truths)  # a request id twice in the poll
        await store.count(
            model,
            {"received": received[model], "joined": parked.met.labels, "duplicated": parked.duplicated + repeated},
            {"labelled": len(parked.met.answers)},
        )
        if parked.waiting:
            log.info("%s: %d labels wait for their answers", model, parked.waiting)
        joined = parked.met.answers
        for version in sorted({j.version for j in joined}):
            await store.add_realised(model, version, [j for j in joined if j.version == version])
        await judge(store, watch, model, joined, emit, now)


async def judge(store: MonitorStore, watch: Watch, model: str, joined: list[Joined], emit: Emit, now: datetime) -> None:
    """Judge a version's live performance once it has enough labelled answers (whichever side of
    the join came last)."""
    versions = sorted({j.version for j in joined})
    spec = await watch.spec(store, model) if versions else None
    if spec is None:
        return
    performance = spec.monitoring.performance
    metric = performance.metric or spec.selection_metric
    for version in versions:
        if await store.labelled_pending(model, version) < performance.min_labels:
            continue
        rows = await store.take_labelled(model, version)
        reference = await watch.reference(store, model, version)
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
        baseline = reference.metrics[metric]
        log.info(
            "%s@%d live %s %.4f over %d labels (validation %.4f)",
            model,
            version,
            metric,
            measured[metric],
            len(rows),
            baseline,
        )
        worse = domain.degradation(metric, measured[metric], baseline, performance)
        if worse is None:
            continue
        degraded_id = emit(
            worse.event(model, version, f"perf-{uuid.uuid4().hex[:16]}", spec.alerts.severity, labelled_rows=len(rows))
        )
        if "performance" in spec.monitoring.retrain_on:
            first = min((j.served_at for j in joined if j.version == version), default=now)
            await retrains.ask_retrain(
                store, watch.sink, model, version, "performance", degraded_id, (first, now), emit
            )


async def expire(store: MonitorStore, watch: Watch, now: datetime) -> dict[str, Ledger]:
    """Drop answers older than the label horizon and labels that waited their time, counting in
    each model's ledger the answers never labelled and the labels that never met their answer;
    every model's ledger."""
    unlabelled = await store.forget_served(now - watch.label_horizon)
    lost = await store.expire_labels(now - (watch.label_wait or watch.label_horizon), now - watch.label_horizon)
    for model in sorted({*unlabelled, *lost}):
        outcomes = lost.get(model, {})
        if outcomes:
            log.warning("%s: labels that never met their answer within the horizon: %s", model, outcomes)
        await store.count(model, outcomes, {"expired": unlabelled.get(model, 0)})
    return await store.ledgers()


async def sweep_one(store: MonitorStore, watch: Watch, model: str, version: int, age: float, emit: Emit) -> bool:
    """Close one window that has aged past its policy's `window_seconds`; True if it closed."""
    spec = await watch.spec(store, model)
    policy = spec.monitoring if spec is not None else Monitoring()
    if age < policy.window_seconds:
        return False
    window = await store.lock_window(model, version)
    if window is None or not window.first_at:
        return False
    real_age = (datetime.now(UTC) - window.first_at).total_seconds()
    if not domain.should_close(window.rows, real_age, policy):
        return False
    await close(store, watch, window, policy, emit)
    return True
