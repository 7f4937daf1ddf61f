"""The prediction log: every answer (and shadow answer) buffered, and published in batches as
PredictionsLogged by a background task; a slow or absent broker never delays a prediction."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from services.deployer.serving.metrics import Metrics
from services.deployer.serving.routing import Live
from shared.contract.events import PredictionsLogged
from shared.runtime.bus import Bus

log = logging.getLogger("modelbus.serving")


class Served(NamedTuple):
    """What the request path hands to the log for one answer; the event's columns are built by the
    publishing task, off the request path. (A named tuple: made on every request, it costs what a
    tuple costs.)"""

    live: Live
    row: dict[str, Any]
    answer: dict[str, Any]
    latency_ms: float
    served_at: float


@dataclass
class PredictionLog:
    """A bounded buffer of predictions, published in batches as PredictionsLogged."""

    bus: Bus
    metrics: Metrics
    capacity: int
    batch: int
    flush_seconds: float
    buffer: collections.deque[tuple[str, Served]] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, model: str, prediction: Served) -> None:
        """Buffer one prediction; never blocks; drops (and counts) it when the buffer is full."""
        if len(self.buffer) >= self.capacity:
            self.metrics.dropped.inc()
            return
        self.buffer.append((model, prediction))
        if len(self.buffer) >= self.batch:
            self.wake.set()

    async def run(self) -> None:
        """Publish until cancelled; a failed batch goes back to the front of the buffer."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.flush_seconds)
            self.wake.clear()
            self.metrics.buffered.set(len(self.buffer))
            while self.buffer:
                if not await self.publish_some():
                    await asyncio.sleep(min(5.0, self.flush_seconds * 2))
                    break

    async def publish_some(self) -> bool:
        """Publish one batch per model from the head of the buffer; False if the broker failed."""
        taken = [self.buffer.popleft() for _ in range(min(self.batch, len(self.buffer)))]
        by_model: dict[str, list[Served]] = {}
        for model, served in taken:
            by_model.setdefault(model, []).append(served)
        for index, (model, predictions) in enumerate(by_model.items()):
            event = logged(model, predictions)
            try:
                # One span per batch (not per request: the request path stays span-free); the
                # monitor's span for the windows these rows go to links to it.
                with self.bus.tracer.start_as_current_span(
                    f"serving log {model}", attributes={"modelbus.predictions": len(predictions)}
                ):
                    await asyncio.wait_for(self.bus.publish(event), timeout=10)
            except Exception as exc:
                rest = [(m, p) for m, ps in list(by_model.items())[index:] for p in ps]
                room = self.capacity - len(self.buffer)
                self.buffer.extendleft(reversed(rest[:room]))
                if len(rest) > room:
                    self.metrics.dropped.inc(len(rest) - room)
                log.warning("could not publish %d predictions (%s); will retry", len(rest), exc)
                return False
            self.metrics.logged.inc(len(predictions))
        return True


def logged(model: str, served: list[Served]) -> PredictionsLogged:
    """The PredictionsLogged of these answers (and shadow answers), column by column.

    Built without re-validation (serving made every value); defaults are filled in. A row's
    features are those its answering version reads, and the derived features it computed.
    """
    loaded = {s.answer["version"]: s.live.engines[s.answer["version"]].loaded for s in served}
    names = dict.fromkeys(
        [f.name for version in loaded.values() for f in version.features]
        + [d["name"] for version in loaded.values() for d in version.derived]
    )
    classes = sorted({c for s in served for c in s.answer.get("probabilities") or ()})
    keys = [
        None if not s.live.sticky_key or s.row.get(s.live.sticky_key) is None else str(s.row[s.live.sticky_key])
        for s in served
    ]
    answers = [s.answer for s in served]
    return PredictionsLogged.model_construct(
        model=model,
        batch_id=uuid.uuid4().hex,
        request_id=[a["request_id"] for a in answers],
        model_version=[a["version"] for a in answers],
        role=[a["role"] for a in answers],
        features={name: [s.row.get(name) for s in served] for name in names},
        prediction=[a["prediction"] for a in answers],
        probabilities={c: [(a.get("probabilities") or {}).get(c) for a in answers] for c in classes} or None,
        latency_ms=[s.latency_ms for s in served],
        served_at=[datetime.fromtimestamp(s.served_at, UTC) for s in served],
        sticky_key=keys if any(k is not None for k in keys) else None,
    )
