"""How long models take to answer, measured fairly: the served form, the native thread pools serving
uses (shared.runtime.threads), a warm-up first, enough calls for a stable p99 (1,000 one-row calls:
ten in the tail, not two), and several models measured in one run, call by call in turn, so that a
busy moment slows each of them alike and their ratio compares like with like. The machine's load
while measuring is part of the result: a p99 taken while the cores were oversubscribed says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.runtime.threads import wide

WARM_CALLS = 50
ROW_CALLS = 1000
BATCH_ROWS = 1000
BATCH_CALLS = 20


@dataclass(frozen=True)
class Latency:
    """A model's latencies in milliseconds, and the machine's load while they were measured."""

    row_p99_ms: float
    batch_p99_ms: float
    row_p50_ms: float | None = None
    row_calls: int = ROW_CALLS
    load: float | None = None  # the 1-minute load average per core (1.0: every core busy)

    def shown(self) -> str:
        """One line: the one-row p50/p99, the batch p99, the calls and the load."""
        load = f", load {self.load:.2f} per core" if self.load is not None else ""
        p50 = f"p50 {self.row_p50_ms:.3g} ms / " if self.row_p50_ms is not None else ""
        return (
            f"one row {p50}p99 {self.row_p99_ms:.3g} ms over {self.row_calls} calls, "
            f"{BATCH_ROWS}-row batch p99 {self.batch_p99_ms:.3g} ms{load}"
        )


def load_per_core() -> float | None:
    """The 1-minute load average divided by the cores (None where the system does not say)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return None


def measure(models: Sequence[Any], x: pd.DataFrame, *, row_calls: int = ROW_CALLS) -> list[Latency]:
    """Each model's latencies on rows of `x`, measured in one run: warm-up calls first, then one-row
    calls on the same row by each model in turn, then 1,000-row batches likewise."""
    if not len(x):
        raise ValueError("no rows to measure latency on")
    for model in models:
        for i in range(WARM_CALLS):
            model.predict(x.iloc[[i % len(x)]])
    rows: list[list[float]] = [[] for _ in models]
    for i in range(row_calls):
        one = x.iloc[[i % len(x)]]
        for taken, model in zip(rows, models, strict=True):
            began = time.perf_counter()
            model.predict(one)
            taken.append((time.perf_counter() - began) * 1000)
    batch = x.sample(n=BATCH_ROWS, replace=len(x) < BATCH_ROWS, random_state=0)
    batches: list[list[float]] = [[] for _ in models]
    with wide(BATCH_ROWS):  # as serving runs a batch this large
        for model in models:
            model.predict(batch)
        for _ in range(BATCH_CALLS):
            for taken, model in zip(batches, models, strict=True):
                began = time.perf_counter()
                model.predict(batch)
                taken.append((time.perf_counter() - began) * 1000)
    load = load_per_core()
    return [
        Latency(
            row_p50_ms=float(np.percentile(one_row, 50)),
            row_p99_ms=float(np.percentile(one_row, 99)),
            batch_p99_ms=float(np.percentile(batched, 99)),
            row_calls=row_calls,
            load=load,
        )
        for one_row, batched in zip(rows, batches, strict=True)
    ]
