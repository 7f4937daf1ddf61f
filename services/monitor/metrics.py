"""The monitor's Prometheus metrics: rows, windows by outcome, drift time and the last scores."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.monitor.domain import Drifted


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
