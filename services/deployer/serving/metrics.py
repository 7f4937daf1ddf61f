"""Serving's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# The error kinds a live model's counter starts at 0 with (a dashboard then shows none, not no data):
# rows its schema refuses, the model failing, its shadow failing.
WATCHED_ERRORS = ("invalid-features", "model-error", "shadow")


class Metrics:
    """Serving's Prometheus metrics."""

    def watch(self, model: str) -> None:
        """Start a model's error counters at 0 (when it first goes live)."""
        for kind in WATCHED_ERRORS:
            self.errors.labels(model, kind)

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "modelbus_serving_predictions",
            "Rows predicted, by model, version and role.",
            ["model", "version", "role"],
            registry=registry,
        )
        self.errors = Counter(
            "modelbus_serving_errors",
            "Requests refused or failed, by model and kind.",
            ["model", "kind"],
            registry=registry,
        )
        self.latency = Histogram(
            "modelbus_serving_request_seconds",
            "Request latency, by model and answering version.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_rows = Histogram(
            "modelbus_serving_batch_rows",
            "Rows per model call (micro-batches of concurrent requests).",
            ["model", "version"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=registry,
        )
        self.shadow = Counter(
            "modelbus_serving_shadow_predictions",
            "Shadow predictions, by whether they agreed with the answer returned.",
            ["model", "version", "agreed"],
            registry=registry,
        )
        self.dropped = Counter(
            "modelbus_serving_predictions_dropped", "Predictions not logged: buffer full.", registry=registry
        )
        self.logged = Counter(
            "modelbus_serving_predictions_logged", "Predictions published as PredictionsLogged.", registry=registry
        )
        self.buffered = Gauge(
            "modelbus_serving_log_buffered", "Predictions waiting to be published.", registry=registry
        )
        self.loaded = Gauge(
            "modelbus_serving_version_memory_bytes",
            "Memory taken by loading a version (resident set growth).",
            ["model", "version", "runtime"],
            registry=registry,
        )
        self.loads = Counter(
            "modelbus_serving_loads",
            "Versions loaded (for a rollout or on a request by name).",
            ["model"],
            registry=registry,
        )
        self.evictions = Counter(
            "modelbus_serving_evictions",
            "Unpinned versions evicted to keep within MODELBUS_SERVING_MEMORY_BYTES.",
            ["model"],
            registry=registry,
        )
        self.cold_load = Histogram(
            "modelbus_serving_cold_load_seconds",
            "Time to load a version on its first request by name (download, digest check, load, warm-up).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )
        self.resident = Gauge(
            "modelbus_serving_resident_bytes", "Memory taken by every resident version.", registry=registry
        )
        self.budget = Gauge("modelbus_serving_memory_budget_bytes", "MODELBUS_SERVING_MEMORY_BYTES.", registry=registry)
        self.pinned = Counter(
            "modelbus_serving_pinned_requests",
            "Requests naming a version (bypassing the rollout), by model, version and protocol.",
            ["model", "version", "protocol"],
            registry=registry,
        )
        self.unauthorized = Counter(
            "modelbus_serving_unauthorized",
            "Requests refused for a missing or unknown bearer token (MODELBUS_SERVING_TOKENS).",
            registry=registry,
        )
        self.load_failures = Counter(
            "modelbus_serving_load_failures", "Versions that could not be loaded.", ["model"], registry=registry
        )
        self.feature_lookup = Histogram(
            "modelbus_serving_feature_lookup_seconds",
            "Time of one Feast online lookup (the keys of every request waiting, together).",
            ["model"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self.feature_keys = Histogram(
            "modelbus_serving_feature_lookup_keys",
            "Entity keys per Feast online lookup.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=registry,
        )
        self.feature_misses = Counter(
            "modelbus_serving_feature_misses",
            "Rows whose entity the online store lacked (or held past its ttl), by the policy applied.",
            ["model", "policy"],
            registry=registry,
        )
        self.stream_rows = Counter(
            "modelbus_serving_stream_rows",
            "Rows of input topics scored into the output topics (committed), by model and version.",
            ["model", "version"],
            registry=registry,
        )
        self.stream_dead = Counter(
            "modelbus_serving_stream_dead_letters",
            "Input messages dead-lettered with their reason, by model and kind.",
            ["model", "kind"],
            registry=registry,
        )
        self.stream_transactions = Counter(
            "modelbus_serving_stream_transactions",
            "Scorer transactions, by outcome (committed, aborted).",
            ["outcome"],
            registry=registry,
        )
        self.stream_batch = Histogram(
            "modelbus_serving_stream_batch_messages",
            "Input messages per scorer transaction.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
            registry=registry,
        )
