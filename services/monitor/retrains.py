"""Whether a retrain asked for on drift or a performance drop can help, and what follows: a
RetrainRequested on the data there is to learn from, a dataset version built from production
feedback, or RetrainSkipped saying why (services.monitor.domain.retrain_decision decides).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from services.monitor import domain, feedback
from services.monitor.records import DatasetSeen, MonitorStore
from shared.contract.events import DataArrived, Event, FeedbackLineage, RetrainRequested, RetrainSkipped
from shared.contract.spec import ModelSpec

log = logging.getLogger("modelbus.monitor")
Emit = Callable[[Event], str]


async def ask_retrain(
    store: MonitorStore,
    sink: feedback.Sink | None,
    model: str,
    version: int,
    asked_for: Literal["drift", "performance"],
    cause_id: str,
    span: tuple[datetime, datetime],
    emit: Emit,
) -> None:
    """Drift or a performance drop asks for a retrain (once per cooldown). It trains only when it
    can help (services.monitor.domain.retrain_decision); otherwise production feedback may become a
    dataset to train on, and failing that RetrainSkipped says why."""
    found = await store.revision_of(model)
    if found is None:
        return
    revision, spec = found
    policy = spec.monitoring
    live = await store.live_of(model)
    if live is not None and live.state in ("canary", "shadow"):
        # A new version is rolling out: its verdict comes first (it may be the answer to this drift).
        log.info("%s: %s on v%d while v%d rolls out, retrain not asked", model, asked_for, version, live.candidate)
        return
    if not await store.retrain_allowed(model, datetime.now(UTC), policy.retrain_cooldown_seconds, asked_for):
        log.info("%s: %s again, retrain not asked (cooldown %.0f s)", model, asked_for, policy.retrain_cooldown_seconds)
        return
    trained = await store.training_of(model, version)
    latest = await store.latest_dataset(spec.dataset)
    grounds = domain.Grounds(
        version=version,
        dataset=spec.dataset,
        trained_on=trained.dataset_version if trained else None,
        trained_revision=trained.spec_revision if trained else None,
        latest=latest.version if latest else None,
        revision=revision,
        tried=await store.tried(model),
    )
    decision = domain.retrain_decision(asked_for, grounds, policy)
    if decision.train:
        emit(
            RetrainRequested(
                model=model,
                reason=asked_for,
                requested_by="monitor",
                cause_event_id=cause_id,
                dataset_version=decision.dataset_version,
            )
        )
        log.info("%s: retrain requested on %s (%s)", model, asked_for, decision.reason)
        return
    available = 0
    if policy.feedback is not None:
        available = await feedback_dataset(store, sink, spec, model, latest, cause_id, span, emit)
        if available < 0:
            return
    reason = decision.reason
    if policy.feedback is not None:
        reason += f"; {available} labelled production rows, {policy.feedback.min_rows} needed for feedback"
    emit(
        RetrainSkipped(
            model=model,
            version=version,
            asked_for=asked_for,
            reason=reason,
            dataset=spec.dataset,
            trained_on=grounds.trained_on,
            latest_dataset_version=grounds.latest,
            spec_revision=revision,
            feedback_rows=available,
            feedback_needed=policy.feedback.min_rows if policy.feedback else None,
            cause_event_id=cause_id,
        )
    )
    log.info("%s: retrain skipped: %s", model, reason)


async def feedback_dataset(
    store: MonitorStore,
    sink: feedback.Sink | None,
    spec: ModelSpec,
    model: str,
    latest: DatasetSeen | None,
    cause_id: str,
    span: tuple[datetime, datetime],
    emit: Emit,
) -> int:
    """Turn labelled production rows into a dataset version and announce it (the trainer trains on
    it): -1 when it was built, else how many rows there were (fewer than the policy needs)."""
    policy = spec.monitoring.feedback
    assert policy is not None
    if policy.since == "window":
        since, until = span[0] - timedelta(microseconds=1), span[1]
    else:
        since = latest.arrived_at if latest else datetime.min.replace(tzinfo=UTC)
        until = datetime.max.replace(tzinfo=UTC)  # every row served since, whatever the clocks say
    rows = await store.feedback(model, since, until, policy.max_rows)
    if len(rows) < policy.min_rows or sink is None:
        return len(rows)
    first, last = min(r.served_at for r in rows), max(r.served_at for r in rows)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    version = f"feedback-{stamp}-{uuid.uuid4().hex[:8]}"
    key = f"datasets/{spec.dataset}/{version}.parquet"  # named as a producer names a version
    written = await asyncio.to_thread(feedback.build, sink, spec, rows, latest, key, seed=spec.split.seed)
    lineage = FeedbackLineage(
        model=model,
        versions=sorted({r.version for r in rows}),
        windows=await store.windows_between(model, first, last),
        label_batches=sorted({r.label_batch for r in rows if r.label_batch}),
        feedback_rows=len(rows),
        mixed_rows=written.mixed_rows,
        base_version=latest.version if latest and written.mixed_rows else None,
        served_from=first,
        served_to=last,
        cause_event_id=cause_id,
    )
    arrived = DataArrived(
        dataset=spec.dataset,
        version=version,
        uri=written.uri,
        sha256=written.sha256,
        format="parquet",
        row_count=written.rows,
        size_bytes=written.size_bytes,
        producer="monitor",
        lineage=lineage,
    )
    emit(arrived)
    await store.keep_dataset(
        DatasetSeen(spec.dataset, version, "monitor", written.uri, "parquet", written.sha256, arrived.occurred_at)
    )
    log.info(
        "%s: feedback dataset %s %s: %d labelled production rows (+%d of %s)",
        model,
        spec.dataset,
        version,
        len(rows),
        written.mixed_rows,
        lineage.base_version,
    )
    return -1
