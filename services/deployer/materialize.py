"""Feast materialization on a schedule: every MODELBUS_FEAST_MATERIALIZE_SECONDS the deployer runs
`materialize-incremental` on the Feast repo (when there is one), so the online store serving reads
keeps up with the offline source. Each run is a span of its own ("feast materialize-incremental")
with the repo, the views and the end time, and is counted in /metrics.

On a schedule rather than on DataArrived: a feature view's source is written by whoever owns it,
often not through the platform, so no event marks its new rows. Running it in two deployers at
once is harmless: each run writes the same values up to its end time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.runtime import feast
from shared.runtime.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Materializer:
    """The deployer's Feast materialization schedule."""

    settings: Settings
    tracer: trace.Tracer
    runs: Counter
    seconds: Histogram

    @classmethod
    def of(cls, settings: Settings, tracer: trace.Tracer, registry: CollectorRegistry) -> Materializer:
        runs = Counter(
            "modelbus_feast_materializations", "Feast materialize-incremental runs, by outcome.", ["outcome"],
            registry=registry,
        )  # fmt: skip
        seconds = Histogram(
            "modelbus_feast_materialize_seconds", "Time of a Feast materialize-incremental run.", registry=registry
        )
        return cls(settings, tracer, runs, seconds)

    async def run_forever(self) -> None:
        """Materialize now and then every `feast_materialize_seconds`."""
        while True:
            await self.once()
            await asyncio.sleep(self.settings.feast_materialize_seconds)

    async def once(self) -> list[str] | None:
        """One run; the views materialized, or None when there is no repo or the run failed."""
        repo = self.settings.feast_repo
        if not (repo / "feature_store.yaml").is_file():
            return None
        end = datetime.now(UTC)
        began = time.perf_counter()
        with self.tracer.start_as_current_span(
            "feast materialize-incremental", attributes={"feast.repo": str(repo), "feast.end": end.isoformat()}
        ) as span:
            try:
                views = await asyncio.to_thread(feast.materialize, repo, end)
            except Exception as exc:  # the stores are away: the next run catches up
                span.record_exception(exc)
                span.set_status(trace.StatusCode.ERROR, str(exc))
                self.runs.labels("failed").inc()
                log.warning("feast materialize-incremental of %s failed: %s", repo, exc)
                return None
            span.set_attribute("feast.views", views)
        self.runs.labels("done").inc()
        self.seconds.observe(time.perf_counter() - began)
        log.info(
            "feast: %s materialized up to %s in %.2f s", ", ".join(views) or "no view", end, time.perf_counter() - began
        )
        return views
