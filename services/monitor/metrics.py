"""The monitor's Prometheus metrics: rows, windows by outcome, drift time and the last scores."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.monitor.domain import Drifted
from services.monitor.records import Ledger


@dataclass
class Metrics:
    """The monitor's Prometheus metrics."""

    registry: CollectorRegistry
    rows: Counter = field(init=False)
    windows: Counter = field(init=False)
    drift_seconds: Histogram = field(init=False)
    drift_score: Gauge = field(init=False)
    drifted_share: Gauge = field(init=False)
    labels: Gauge = field(init=False)
    answers: Gauge = field(init=False)

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

        self.labels = Gauge(
            "modelbus_monitor_labels",
            "Labels received per model and where they went (joined, waiting, duplicated, unknown, expired,"
            " misdirected), from the monitor's ledger.",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.answers = Gauge(
            "modelbus_monitor_answers",
            "Answers logged per model, labelled, and expired unlabelled at the label horizon, from the ledger.",
            ["model", "outcome"],
            registry=self.registry,
        )

    def ledger(self, ledgers: dict[str, Ledger]) -> None:
        """Show each model's ledger as it stands (it is counted in the database, exactly once)."""
        for model, ledger in ledgers.items():
            for outcome, n in {**ledger.labels, "waiting": ledger.waiting}.items():
                self.labels.labels(model, outcome).set(n)
            for outcome, n in ledger.answers.items():
                self.answers.labels(model, outcome).set(n)

    def tested(self, model: str, version: int, found: Drifted) -> None:
        """Keep a tested window's scores for the dashboards."""
        for feature in [*found.features, *([found.prediction] if found.prediction else [])]:
            score = feature.score if feature.score is not None else feature.statistic
            self.drift_score.labels(model, str(version), feature.feature, feature.test).set(score)
        self.drifted_share.labels(model, str(version)).set(found.drifted_share)
