"""The Kafka side of the bus: connection options, the FastStream broker, and the topic catalog
created on (or dropped from) a cluster with the contract's ACLs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
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
from shared.contract.access import Grant, grants
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


def admin_config(settings: Settings) -> dict[str, str | int | float | bool]:
    """librdkafka options of an admin client (ACLs and SCRAM credentials, which aiokafka lacks)."""
    options: dict[str, str | int | float | bool] = {
        "bootstrap.servers": ",".join(settings.kafka_servers()),
        "security.protocol": settings.kafka_security_protocol,
        "socket.timeout.ms": "10000",
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl.mechanism"] = settings.kafka_sasl_mechanism
        options["sasl.username"] = settings.kafka_sasl_username or ""
        options["sasl.password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        )
    if "SSL" in settings.kafka_security_protocol and settings.kafka_ssl_cafile:
        options["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
    return options


def _bindings(found: Sequence[Grant], *, users: str = "", filters: bool = False) -> list[Any]:
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    kind = AclBindingFilter if filters else AclBinding
    resources = {
        "topic": ResourceType.TOPIC,
        "group": ResourceType.GROUP,
        "transactional_id": ResourceType.TRANSACTIONAL_ID,
    }
    return [
        kind(
            resources[grant.resource],
            grant.name,
            ResourcePatternType.PREFIXED if grant.pattern == "prefixed" else ResourcePatternType.LITERAL,
            f"User:{users}{grant.principal}",
            "*",
            getattr(AclOperation, grant.operation),
            AclPermissionType.ALLOW,
        )
        for grant in found
    ]


def _change_acls(settings: Settings, *, create: bool) -> int:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(admin_config(settings))
    bindings = _bindings(grants(settings.topic_prefix), users=settings.kafka_user_prefix, filters=not create)
    futures = admin.create_acls(bindings) if create else admin.delete_acls(bindings)
    try:
        for future in futures.values():
            future.result(timeout=30)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.SECURITY_DISABLED:
            return 0  # a cluster without an authorizer: nothing to grant
        raise
    if create:
        _wait_in_force(admin, bindings)
    return len(bindings)


def _wait_in_force(admin: Any, bindings: list[Any], timeout: float = 30.0) -> None:
    """Wait until a broker authorizes with `bindings`: the controller acknowledges new ACLs before
    the brokers apply them, and a client that came at once would be denied."""
    from confluent_kafka.admin import AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType
    from confluent_kafka.admin import ResourceType as Kind

    wanted = {(b.restype, b.name, b.resource_pattern_type, b.principal, b.operation) for b in bindings}
    anything: Any = None  # a filter's None matches every name, principal and host
    everything = AclBindingFilter(
        Kind.ANY, anything, ResourcePatternType.ANY, anything, anything, AclOperation.ANY, AclPermissionType.ANY
    )
    deadline = time.monotonic() + timeout
    while True:
        found = admin.describe_acls(everything).result(timeout=10)
        if wanted <= {(b.restype, b.name, b.resource_pattern_type, b.principal, b.operation) for b in found}:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the broker did not apply {len(wanted)} new ACLs within {timeout:.0f} s")
        time.sleep(0.05)


async def ensure_acls(settings: Settings) -> int:
    """Grant the settings' platform (its topic prefix) the contract's ACLs, as the admin
    principal; idempotent. Returns how many ACLs the platform has (0: the cluster authorizes
    nothing)."""
    return await asyncio.to_thread(_change_acls, settings, create=True)


async def drop_acls(settings: Settings) -> None:
    """Delete the ACLs of the settings' platform (a throwaway platform's, after a test)."""
    await asyncio.to_thread(_change_acls, settings, create=False)


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
    # A compacted topic keeps every record for a week before compaction may drop older ones of a
    # key: a consumer less than a week behind sees every spec revision, one by one.
    found = {"cleanup.policy": "compact", "min.compaction.lag.ms": str(7 * 86_400_000)} if spec.compacted else {}
    if settings.topic_replication_factor >= 3:
        found["min.insync.replicas"] = "2"
    return found


async def ensure_topics(
    settings: Settings, *, catalog: Sequence[topics.TopicSpec] = topics.CATALOG, acls: bool = True
) -> tuple[list[str], list[str]]:
    """Create the catalog's missing topics and (with `acls`, on a cluster with an authorizer)
    grant the platform's ACLs; returns (created, already there)."""
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
    finally:
        await admin.close()
    if acls and settings.kafka_security_protocol != "PLAINTEXT":
        await ensure_acls(settings)
    return [t.name for t in missing], sorted(set(wanted) & existing)


async def drop_topics(settings: Settings) -> None:
    """Delete the catalog's topics of the settings' prefix and its models' stream topics (a
    throwaway platform's, after a test)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**aiokafka_options(settings))
    await admin.start()
    try:
        streams = (settings.topic(topics.INPUTS) + ".", settings.topic(topics.OUTPUTS) + ".")
        found = [t for t in await admin.list_topics() if t.startswith(streams)]
        await admin.delete_topics([settings.topic(spec.name) for spec in topics.CATALOG] + found)
    finally:
        await admin.close()
    if settings.kafka_security_protocol != "PLAINTEXT":
        await drop_acls(settings)
