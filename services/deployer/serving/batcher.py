"""Micro-batching: the rows of concurrent requests for one version, predicted in one call."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, NamedTuple

from prometheus_client import Histogram

from shared.runtime.served import Loaded, Row

SLOW_CALL_SECONDS = 0.002


class Predicted(NamedTuple):
    """What a model call gave for some rows: a label (or value) per row, and each row's class
    probabilities for a classifier. (A named tuple: one per request, as cheap as a tuple.)"""

    labels: list[Any]
    probabilities: Any | None = None


Pending = tuple[list[Row], "asyncio.Future[Predicted]"]


class Batcher:
    """Predicts the rows of concurrent requests for one version together.

    Requests submitted in the same turn of the event loop, or while the model was busy, form one
    call. Cheap models run inline (no thread hop); a model whose calls take longer than
    `SLOW_CALL_SECONDS` runs in a worker thread so the loop keeps accepting requests meanwhile.
    """

    def __init__(self, loaded: Loaded, *, max_rows: int, observe: Histogram) -> None:
        self.loaded = loaded
        self.max_rows = max_rows
        self.observe = observe.labels(loaded.model, str(loaded.version))
        self.waiting: collections.deque[Pending] = collections.deque()
        self.scheduled = False
        self.busy = False
        self.call_seconds = loaded.call_seconds  # a warm call's, until calls are timed here

    def submit(self, rows: list[Row]) -> asyncio.Future[Predicted]:
        """Queue rows; the future resolves to what the model predicted for them."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Predicted] = loop.create_future()
        self.waiting.append((rows, future))
        if not self.scheduled and not self.busy:
            self.scheduled = True
            loop.call_soon(self._flush)
        return future

    def _take(self) -> list[Pending]:
        batch = [self.waiting.popleft()]
        rows = len(batch[0][0])
        while self.waiting and rows + len(self.waiting[0][0]) <= self.max_rows:
            item = self.waiting.popleft()
            rows += len(item[0])
            batch.append(item)
        return batch

    def _flush(self) -> None:
        self.scheduled = False
        if not self.waiting:
            return
        batch = self._take()
        if self.call_seconds > SLOW_CALL_SECONDS:
            self.busy = True
            asyncio.get_running_loop().create_task(self._in_thread(batch))
        else:
            self._settle(batch, self._call(batch))
            self._again()

    async def _in_thread(self, batch: list[Pending]) -> None:
        try:
            outcome = await asyncio.to_thread(self._call, batch)
            self._settle(batch, outcome)
        finally:
            self.busy = False
            self._again()

    def _again(self) -> None:
        if self.waiting and not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _call(self, batch: list[Pending]) -> Predicted | BaseException:
        rows = [row for request, _ in batch for row in request]
        began = time.perf_counter()
        try:
            labels, probabilities = self.loaded.predict(rows)
        except Exception as exc:
            return exc
        seconds = time.perf_counter() - began
        self.call_seconds = seconds if not self.call_seconds else 0.8 * self.call_seconds + 0.2 * seconds
        self.observe.observe(len(rows))
        return Predicted(labels, probabilities)

    def _settle(
        self,
        batch: list[Pending],
        outcome: Predicted | BaseException,
    ) -> None:
        if isinstance(outcome, BaseException):
            if len(batch) > 1:  # find the culprit: each request on its own
                for item in batch:
                    self._settle([item], self._call([item]))
                return
            if not batch[0][1].done():
                batch[0][1].set_exception(outcome)
            return
        labels, probabilities = outcome.labels, outcome.probabilities
        start = 0
        for rows, future in batch:
            end = start + len(rows)
            if not future.done():
                future.set_result(
                    Predicted(labels[start:end], probabilities[start:end] if probabilities is not None else None)
                )
            start = end
