"""The monitor's rules: when a window closes, how severe a drift is, how a canary compares with
stable and what the deployer should do, when live performance has degraded, and whether a retrain
is asked for. Pure: values in, values out (the drift statistics are in services.monitor.drift, the
window's columns in services.monitor.windows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np

from services.monitor import drift
from shared.contract.events import FeatureDrift, PredictionsLogged
from shared.contract.spec import METRICS, Monitoring, PerformancePolicy

MIN_ROWS_BY_TIME = 30
# A window whose version's reference profile (or spec) is not known yet waits for it, up to this
# many windows' worth of rows (at least UNTESTED_ROWS); then it closes untested, so what a close
# reads back stays bounded.
UNTESTED_WINDOWS = 10
UNTESTED_ROWS = 100_000


def should_close(rows: int, age_seconds: float, policy: Monitoring) -> bool:
    """A window closes at `window_rows` rows, or at `window_seconds` with at least 30 rows."""
    return rows >= policy.window_rows or (age_seconds >= policy.window_seconds and rows >= MIN_ROWS_BY_TIME)


def waits_for_reference(rows: int, policy: Monitoring) -> bool:
    """Whether a window with no reference (or spec) yet stays open for it, rather than closing untested."""
    return rows < max(UNTESTED_WINDOWS * policy.window_rows, UNTESTED_ROWS)


@dataclass(frozen=True)
class Drifted:
    """A window's drift verdicts, ready for DriftDetected."""

    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    drifted_share: float
    dataset_drift: bool
    missing: list[str]


def severity(found: Drifted) -> Literal["info", "warning", "critical"]:
    """critical: the dataset drifted and so did the prediction; warning: the dataset drifted; else info."""
    if found.dataset_drift and found.prediction is not None and found.prediction.drifted:
        return "critical"
    return "warning" if found.dataset_drift else "info"


def retrain_on_drift(found: Drifted, policy: Monitoring) -> bool:
    """A dataset-level drift asks for a retrain when the policy retrains on drift (cooldown aside)."""
    return found.dataset_drift and "drift" in policy.retrain_on


# ---------------------------------------------------------------- canary analysis

PREDICTION_DISTANCE = 0.1


@dataclass(frozen=True)
class Summary:
    """What canary analysis compares between two versions' windows."""

    rows: int
    latency_p99_ms: float
    estimated_error: float | None  # 1 - mean confidence: the error a calibrated classifier expects (CBPE)
    prediction_shares: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "latency_p99_ms": self.latency_p99_ms,
            "estimated_error": self.estimated_error,
            "prediction_shares": self.prediction_shares,
        }

    @classmethod
    def from_dict(cls, found: dict[str, Any]) -> Summary:
        return cls(
            rows=int(found["rows"]),
            latency_p99_ms=float(found["latency_p99_ms"]),
            estimated_error=found.get("estimated_error"),
            prediction_shares=dict(found.get("prediction_shares", {})),
        )


@dataclass(frozen=True)
class Comparison:
    """One metric of the canary against stable."""

    metric: str
    candidate: float | None
    stable: float | None
    threshold: float
    passed: bool


def compare(candidate: Summary, stable: Summary, policy: Any) -> list[Comparison]:
    """Canary against stable on estimated error, p99 latency and the prediction distribution.

    `policy` is the spec's rollout policy: `max_error_rate_increase` (absolute excess of the
    canary's error), `max_latency_ratio` (canary p99 over stable p99), unless the canary is within
    `latency_slack_ms` of stable (milliseconds of scheduling noise are no regression).
    """
    found = []
    if candidate.estimated_error is not None and stable.estimated_error is not None:
        excess = candidate.estimated_error - stable.estimated_error
        found.append(
            Comparison(
                "estimated_error_rate",
                candidate.estimated_error,
                stable.estimated_error,
                policy.max_error_rate_increase,
                excess <= policy.max_error_rate_increase,
            )
        )
    ratio_ok = candidate.latency_p99_ms <= policy.max_latency_ratio * max(stable.latency_p99_ms, 1.0)
    ratio_ok = ratio_ok or candidate.latency_p99_ms - stable.latency_p99_ms <= policy.latency_slack_ms
    found.append(
        Comparison(
            "latency_p99_ms", candidate.latency_p99_ms, stable.latency_p99_ms, policy.max_latency_ratio, ratio_ok
        )
    )
    classes = sorted(set(candidate.prediction_shares) | set(stable.prediction_shares))
    p = np.array([stable.prediction_shares.get(c, 0.0) for c in classes])
    q = np.array([candidate.prediction_shares.get(c, 0.0) for c in classes])
    distance = drift.jensen_shannon(p, q) if p.sum() and q.sum() else 0.0
    found.append(Comparison("prediction_distance", distance, 0.0, PREDICTION_DISTANCE, distance <= PREDICTION_DISTANCE))
    return found


Verdict = Literal["advance", "hold", "rollback"]


def verdict(comparisons: Sequence[Comparison], samples: int, min_samples: int) -> tuple[Verdict, str]:
    """(advance | hold | rollback, why): any failed comparison rolls back; too few samples hold."""
    failed = [c for c in comparisons if not c.passed]
    if failed:
        return "rollback", "canary worse than stable: " + ", ".join(
            f"{c.metric} {c.candidate:.4g} vs {c.stable:.4g}" for c in failed
        )
    if samples < min_samples:
        return "hold", f"{samples} canary samples, {min_samples} needed"
    return "advance", f"canary within every threshold over {samples} samples"


# ---------------------------------------------------------------- live performance


@dataclass(frozen=True)
class Degradation:
    """A live metric beyond its allowed drop from the validation value."""

    metric: str
    value: float
    baseline: float
    threshold: float


def degradation(metric: str, value: float, baseline: float, watch: PerformancePolicy) -> Degradation | None:
    """The degradation when `value` is worse than `baseline` by more than `watch.max_drop`, else None."""
    lower = metric in METRICS and not METRICS[metric].higher_is_better
    worse = value - baseline if lower else baseline - value
    if worse <= watch.max_drop:
        return None
    threshold = baseline + watch.max_drop if lower else baseline - watch.max_drop
    return Degradation(metric, value, baseline, threshold)


Answer = tuple[str, int, str, str, float | None, datetime]


def answers(event: PredictionsLogged) -> list[Answer]:
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
