"""The monitor's rules: when a window closes, how severe a drift is,
when live performance has degraded, and whether a retrain is asked for and can help. Pure: values
in, values out (the drift statistics are in services.monitor.drift, canary analysis in
services.monitor.canary, label-free estimates in services.monitor.estimate, the window's columns
in services.monitor.windows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.contract.events import FeatureDrift, PerformanceDegraded, Severity
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


# ---------------------------------------------------------------- whether a retrain can help


@dataclass(frozen=True)
class Grounds:
    """What a retrain decision reads: what the version was trained on, what is known now."""

    version: int
    dataset: str
    trained_on: str | None  # dataset version of the version's run (None: not known)
    trained_revision: int | None
    latest: str | None  # the newest dataset version known
    revision: int  # the spec revision in force
    tried: frozenset[tuple[str, int]]  # (dataset version, spec revision) of every run started


@dataclass(frozen=True)
class Decision:
    """Train (on `dataset_version`) or skip, and why."""

    train: bool
    reason: str
    dataset_version: str | None = None


def retrain_decision(asked_for: str, grounds: Grounds, policy: Monitoring) -> Decision:
    """A retrain asked for on drift or performance trains only when it can help: there is a dataset
    version (a producer's, or production feedback) or a spec revision the version was not trained
    with, and no run has tried that pair already; or the spec opts in (`retrain_without_new_data`)."""
    g = grounds
    if policy.retrain_without_new_data:
        return Decision(True, "the spec retrains without new data", g.latest)
    if g.latest is None or g.trained_on is None:
        return Decision(True, f"v{g.version}'s training data is not known", g.latest)
    if (g.latest, g.revision) not in g.tried:
        if g.latest != g.trained_on:
            why = f"dataset {g.dataset} {g.latest} is newer than v{g.version}'s {g.trained_on}"
        else:
            why = f"spec revision {g.revision} differs from v{g.version}'s {g.trained_revision}"
        return Decision(True, why, g.latest)
    persists = "drift persists" if asked_for == "drift" else "live performance is still below its baseline"
    if g.latest == g.trained_on and g.revision == g.trained_revision:
        return Decision(False, f"{persists}; no data newer than v{g.version}'s dataset ({g.dataset} {g.trained_on})")
    return Decision(
        False, f"{persists}; dataset {g.dataset} {g.latest} with spec revision {g.revision} was trained already"
    )


# ---------------------------------------------------------------- live performance


@dataclass(frozen=True)
class Degradation:
    """A live metric beyond its allowed drop from the validation value."""

    metric: str
    value: float
    baseline: float
    threshold: float

    def event(
        self,
        model: str,
        version: int,
        window_id: str,
        severity: Severity,
        *,
        labelled_rows: int,
        estimated: bool = False,
        rows: int | None = None,
    ) -> PerformanceDegraded:
        """The PerformanceDegraded that announces it (measured on labels, or estimated)."""
        return PerformanceDegraded(
            model=model,
            version=version,
            window_id=window_id,
            metric=self.metric,
            value=self.value,
            baseline=self.baseline,
            threshold=self.threshold,
            labelled_rows=labelled_rows,
            severity=severity,
            estimated=estimated,
            rows=rows,
        )


def degradation(metric: str, value: float, baseline: float, watch: PerformancePolicy) -> Degradation | None:
    """The degradation when `value` is worse than `baseline` by more than `watch.max_drop`, else None."""
    lower = metric in METRICS and not METRICS[metric].higher_is_better
    worse = value - baseline if lower else baseline - value
    if worse <= watch.max_drop:
        return None
    threshold = baseline + watch.max_drop if lower else baseline - watch.max_drop
    return Degradation(metric, value, baseline, threshold)
