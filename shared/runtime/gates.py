"""The gates a model can be held to wherever it is checked: the evaluator judges a registered version
on them, and the trainer checks each candidate on those it can already measure (sanity and
latency) before choosing one, so that the run's winner is one that can pass.

The gates are pure (models, rows and measured latencies in; gate results out); `timing` takes
the measurements they read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.contract.events import GateResult
from shared.contract.spec import ModelSpec
from shared.runtime import latency
from shared.runtime.latency import Latency

log = logging.getLogger("modelbus.gates")


@dataclass(frozen=True)
class Timing:
    """The latencies that count for a candidate, the first ones too when a gate failed on them and
    they were measured again, and the champion's from the same run."""

    latency: Latency
    first: Latency | None = None
    champion: Latency | None = None


def gate(
    name: str, metric: str, value: float | None, threshold: float, comparator: str, detail: str = ""
) -> GateResult:
    if value is None or np.isnan(value):
        passed = False
        detail = detail or "could not be measured"
        value = None
    elif comparator == ">=":
        passed = value >= threshold
    elif comparator == "<=":
        passed = value <= threshold
    elif comparator == ">":
        passed = value > threshold
    else:
        passed = value < threshold
    return GateResult(
        name=name, metric=metric, value=value, threshold=threshold, comparator=comparator, passed=passed, detail=detail
    )


def sanity_gates(spec: ModelSpec, model: Any, x: pd.DataFrame) -> list[GateResult]:
    """Probabilities in [0, 1] summing to 1; each class predicted at a plausible rate."""
    if spec.task != "classification":
        predicted = np.asarray(model.predict(x), dtype=float)
        finite = float(np.isfinite(predicted).mean())
        return [gate("finite_predictions", "finite_share", finite, 1.0, ">=")]
    found = []
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(x), dtype=float)
        inside = float(((proba >= 0) & (proba <= 1)).all(axis=1).mean())
        sums = float(np.max(np.abs(proba.sum(axis=1) - 1))) if len(proba) else 0.0
        found.append(gate("probabilities_in_0_1", "share_in_range", inside, 1.0, ">="))
        found.append(gate("probabilities_sum_to_1", "max_abs_error", sums, 1e-6, "<="))
    predicted = pd.Series(model.predict(x))
    rates = predicted.value_counts(normalize=True).reindex(list(model.classes_), fill_value=0.0)
    e = spec.evaluation
    found.append(gate("min_class_rate", "class_rate", float(rates.min()), e.min_class_rate, ">=", _rates(rates)))
    found.append(gate("max_class_rate", "class_rate", float(rates.max()), e.max_class_rate, "<=", _rates(rates)))
    return found


def _rates(rates: pd.Series) -> str:
    return ", ".join(f"{k}: {v:.3f}" for k, v in rates.items())


def latency_gates(spec: ModelSpec, timing: Timing | Latency) -> list[GateResult]:
    """Inference latency budget: one row, a 1,000-row batch and, when the spec asks, the one-row p99
    against the champion's from the same run. Each gate carries its measurements and the load."""
    timing = timing if isinstance(timing, Timing) else Timing(timing)
    e, latency, first, champion = spec.evaluation, timing.latency, timing.first, timing.champion
    found = []

    def row(m: Latency) -> float:
        return m.row_p99_ms

    def batch(m: Latency) -> float:
        return m.batch_p99_ms

    for name, budget, value in (
        ("latency_p99_row", e.max_latency_ms_row, row),
        ("latency_p99_batch_1000", e.max_latency_ms_batch, batch),
    ):
        detail = latency.shown()
        if first is not None:
            detail += f"; measured again after {first.shown()}"
        if champion is not None:
            detail += f"; the champion in the same run: {champion.shown()}"
        result = gate(name, "latency_p99_ms", value(latency), budget, "<=", detail)
        found.append(
            result.model_copy(
                update={
                    "measurements": [value(m) for m in (first, latency) if m is not None],
                    "champion_value": value(champion) if champion is not None else None,
                    "load": latency.load,
                }
            )
        )
    if e.max_latency_ratio is not None:
        if champion is None:
            found.append(
                GateResult(
                    name="latency_vs_champion",
                    metric="latency_p99_ratio",
                    value=None,
                    threshold=e.max_latency_ratio,
                    comparator="<=",
                    passed=True,
                    detail="no champion to compare with",
                )
            )
        else:
            ratio = latency.row_p99_ms / max(champion.row_p99_ms, 1e-6)
            detail = f"one-row p99 {latency.row_p99_ms:.3g} ms vs the champion's {champion.row_p99_ms:.3g} ms, same run"
            result = gate("latency_vs_champion", "latency_p99_ratio", ratio, e.max_latency_ratio, "<=", detail)
            found.append(result.model_copy(update={"champion_value": champion.row_p99_ms, "load": latency.load}))
    return found


def latency_failed(spec: ModelSpec, timing: Timing) -> bool:
    """Whether any latency gate fails on these measurements (then they are taken once more)."""
    return not all(g.passed for g in latency_gates(spec, timing))


def timing(
    spec: ModelSpec, served: Any, champion: Any | None, x: pd.DataFrame, *, row_calls: int = latency.ROW_CALLS
) -> Timing:
    """A model's latencies in its served form, the champion's (if any) measured in the same run;
    when a latency gate fails on them, everything is measured once more and the second run counts
    (the first kept), so that a busy moment does not reject a model on its own."""
    models = [served] if champion is None else [served, champion]
    found = latency.measure(models, x, row_calls=row_calls)
    measured = Timing(found[0], champion=found[1] if champion is not None else None)
    if not latency_failed(spec, measured):
        return measured
    log.info("%s: a latency gate failed (%s); measuring again", spec.model, measured.latency.shown())
    again = latency.measure(models, x, row_calls=row_calls)
    return Timing(again[0], first=found[0], champion=again[1] if champion is not None else None)
