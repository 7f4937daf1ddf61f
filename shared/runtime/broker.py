"""The Kafka side of the bus: connection options, the FastStream broker, and the topic catalog
created on (or dropped from) a cluster."""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.message import StreamMessage
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from shared.contract import topics
from shared.runtime.settings import Settings


def kafka_security(settings: Settings) -> BaseSecurity | None:
    """FastStream security object from the settings' Kafka protocol options."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile) if "SSL" in protocol else None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    user = settings.kafka_sasl_username or ""
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    return sasl[settings.kafka_sasl_mechanism](user, password, ssl_context=context, use_ssl=protocol == "SASL_SSL")


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Connection options for plain aiokafka clients (admin, CLI tail)."""
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_servers()}
    protocol = settings.kafka_security_protocol
    options["security_protocol"] = protocol
    if "SSL" in protocol:
        options["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        )
    return options


def make_broker(
    settings: Settings,
    *,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
) -> KafkaBroker:
    """The FastStream broker of a service: idempotent producer, tracing and metrics middleware."""
    middlewares: list[Any] = [KafkaTelemetryMiddleware(tracer_provider=tracer_provider)]
    if registry is not None:
        middlewares.append(KafkaPrometheusMiddleware(registry=registry, app_name=settings.service_name))
    return KafkaBroker(
        settings.kafka_servers(),
        client_id=settings.service_name,
        enable_idempotence=True,
        acks="all",
        max_request_size=settings.max_message_bytes + 65_536,
        security=kafka_security(settings),
        middlewares=middlewares,
        logger=logging.getLogger(f"modelbus.{settings.service_name}.broker"),
    )


async def raw_body(message: StreamMessage[Any]) -> bytes:
    # The envelope is decoded by Bus._consume, which dead-letters what does not parse;
    # FastStream must not try (and fail) first.
    return message.body


async def tolerant_parser(
    records: tuple[ConsumerRecord[bytes, bytes], ...],
    original: Callable[[tuple[ConsumerRecord[bytes, bytes], ...]], Awaitable[StreamMessage[Any]]],
) -> StreamMessage[Any]:
    """FastStream's batch parser, on copies whose headers are made readable: it decodes every
    header as UTF-8 and would fail the whole batch on one that is not. The bus reads the original
    records (kept as the raw message) and dead-letters such a message, naming the header."""
    readable = tuple(
        dataclasses.replace(r, headers=[(k, v.decode("utf-8", "replace").encode()) for k, v in r.headers or ()])
        for r in records
    )
    parsed = await original(readable)
    parsed.raw_message = records
    return parsed


def topic_configs(settings: Settings, spec: topics.TopicSpec) -> dict[str, str]:
    """A new topic's configuration: compaction where the catalog says so, and with replicas, a
    write acknowledged (acks=all) only once two replicas have it, so that losing one broker loses
    no acknowledged event."""
    found = {"cleanup.policy": "compact"} if spec.compacted else {}
    if settings.topic_replication_factor >= 3:
        found["min.insync.replicas"] = "2"
    return found


async def ensure_topics(
    settings: Settings, *, catalog: Sequence[topics.TopicSpec] = topics.CATALOG
) -> tuple[list[str], list[str]]:
    """Create the catalog's missing topics; returns (created, already there)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {settings.topic(spec.name): spec for spec in catalog}
        missing = [
            NewTopic(
                name,
                num_partitions=spec.partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs=topic_configs(settings, spec),
            )
            for name, spec in wanted.items()
            if name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
        return [t.name for t in missing], sorted(set(wanted) & existing)
    finally:
        await admin.close()


async def drop_topics(settings: Settings) -> None:
    """Delete the catalog's topics of the settings' prefix (a throwaway platform's, after a test)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        await admin.delete_topics([settings.topic(spec.name) for spec in topics.CATALOG])
    finally:
        await admin.close()
