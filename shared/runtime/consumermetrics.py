"""What a service's consumers report to Prometheus: lag per partition, handler failures and dead
letters (the series the Grafana dashboard's event panels read; no Kafka exporter is needed)."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import ConsumerRecord, TopicPartition
from faststream.kafka import KafkaMessage
from prometheus_client import CollectorRegistry, Counter, Gauge


class ConsumerMetrics:
    """What a service's consumers report: lag per partition, handler failures and dead letters.

    The counters start at 0 for every group and event type a service subscribes to, so that a
    dashboard shows "none" rather than "no data"; the lag is read from each fetched batch (the
    partition's high watermark less the next offset), so it is fresh while a consumer consumes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Gauge(
            "modelbus_consumer_lag",
            "Messages behind the partition's end, as of the group's last batch.",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self.failures = Counter(
            "modelbus_handler_failures",
            "Handler attempts that raised (each retry counts).",
            ["group", "event"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "modelbus_dead_letters", "Messages a consumer group dead-lettered.", ["group"], registry=registry
        )
        self.dropped = Counter(
            "modelbus_events_dropped",
            "Events a handler found late (about something that has since ended): they changed nothing.",
            ["group", "event"],
            registry=registry,
        )

    def subscribed(self, group_id: str, events: frozenset[str] | None) -> None:
        for event in sorted(events or ()):
            self.failures.labels(group_id, event)
            self.dropped.labels(group_id, event)
        self.dead_letters.labels(group_id)

    def batch(self, message: KafkaMessage, group_id: str, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        consumer = getattr(message, "consumer", None)
        highwater = getattr(consumer, "highwater", None)
        if highwater is None:
            return
        last: dict[tuple[str, int], int] = {}
        for record in records:
            last[(record.topic, record.partition)] = record.offset
        for (topic, partition), offset in last.items():
            end = highwater(TopicPartition(topic, partition))
            if end is not None:
                self.lag.labels(group_id, topic, str(partition)).set(max(0, end - offset - 1))
