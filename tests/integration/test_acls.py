"""The broker enforces the contract's producer/consumer table: against the real Kafka, every
principal writes and reads exactly the topics the table allows and joins only its own consumer
group; a model's stream topics are written and read as the stream grants say, and only serving
opens transactions, only as a scorer; everything else fails with Kafka's authorization error,
and a client without credentials gets nothing at all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from aiokafka.protocol.metadata import MetadataRequest

from shared.contract import access, topics
from shared.contract.topics import Principal
from shared.ops import credentials
from shared.runtime.broker import aiokafka_options, ensure_acls
from shared.runtime.settings import Settings

OUTSIDERS: tuple[Principal, ...] = tuple(p for p in topics.PRINCIPALS if p != "admin")


@pytest.fixture
async def settings(settings: Settings) -> Settings:
    """The test's platform prefix with the ACLs `stack up` and `modelbus topics` grant."""
    await ensure_acls(settings)
    return settings


def as_(settings: Settings, principal: Principal) -> dict[str, object]:
    return aiokafka_options(credentials.as_principal(settings, principal))


@contextlib.asynccontextmanager
async def clients(
    settings: Settings, principal: Principal
) -> AsyncIterator[tuple[AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaClient]]:
    """A producer, a consumer (no group) and a bare client connected as `principal`."""
    options = as_(settings, principal)
    producer = AIOKafkaProducer(**options, request_timeout_ms=10_000)
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, request_timeout_ms=10_000)
    client = AIOKafkaClient(**options, request_timeout_ms=10_000)
    await producer.start()
    await consumer.start()
    await client.bootstrap()
    try:
        yield producer, consumer, client
    finally:
        await client.close()
        await consumer.stop()
        await producer.stop()


async def write_outcome(producer: AIOKafkaProducer, topic: str) -> str:
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}", key=b"acl-probe"), 20)
    except TopicAuthorizationFailedError:
        return "denied"
    return "allowed"


async def read_outcome(client: AIOKafkaClient, consumer: AIOKafkaConsumer, topic: str) -> str:
    """A topic the principal may not even describe is answered TOPIC_AUTHORIZATION_FAILED (29) in
    the metadata; one it may describe (it writes it) but not read, in the fetch."""
    metadata = await client.send(
        client.get_random_node(), MetadataRequest(topics=[topic], allow_auto_topic_creation=False)
    )
    denied = TopicAuthorizationFailedError.errno
    if any(error == denied for error, name, *_ in metadata.topics if name == topic):
        return "denied"
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    try:
        await consumer.seek_to_beginning(partition)
        await consumer.getmany(partition, timeout_ms=100)
        await consumer.position(partition)
    except TopicAuthorizationFailedError:
        return "denied"
    return "allowed"


def expected(principal: Principal, operation: access.Operation, topic: str) -> str:
    return "allowed" if access.allowed(principal, operation, topic) else "denied"


@pytest.mark.parametrize("principal", OUTSIDERS)
async def test_each_principal_writes_and_reads_exactly_what_the_table_allows(
    settings: Settings, principal: Principal
) -> None:
    observed: dict[tuple[str, str], str] = {}
    async with clients(settings, principal) as (producer, consumer, client):
        for spec in topics.CATALOG:
            full = settings.topic(spec.name)
            observed[(spec.name, "WRITE")] = await write_outcome(producer, full)
            observed[(spec.name, "READ")] = await read_outcome(client, consumer, full)
    wanted = {
        (spec.name, operation): expected(principal, operation, spec.name)
        for spec in topics.CATALOG
        for operation in ("WRITE", "READ")
    }
    assert observed == wanted
    assert sum(1 for outcome in observed.values() if outcome == "denied") > 0, "every outsider is denied something"


@pytest.mark.parametrize("principal", topics.GROUP_MEMBERS)
async def test_a_service_joins_its_own_consumer_group_and_no_other(settings: Settings, principal: Principal) -> None:
    topic = next(settings.topic(t) for t in access.topic_table() if access.allowed(principal, "READ", t))
    other = next(p for p in topics.GROUP_MEMBERS if p != principal)
    outcomes = {}
    for group in (principal, other):
        consumer = AIOKafkaConsumer(
            topic,
            **as_(settings, principal),
            group_id=settings.topic(group),
            enable_auto_commit=False,
            request_timeout_ms=10_000,
        )
        try:
            await consumer.start()
            for _ in range(50):
                await consumer.getmany(timeout_ms=200)
                if consumer.assignment():
                    break
            outcomes[group] = "joined" if consumer.assignment() else "no partitions assigned"
        except GroupAuthorizationFailedError:
            outcomes[group] = "denied"
        finally:
            await consumer.stop()
    assert outcomes == {principal: "joined", other: "denied"}


async def test_a_client_without_credentials_can_neither_connect_nor_list(settings: Settings) -> None:
    anonymous = settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    admin = AIOKafkaAdminClient(**aiokafka_options(anonymous), request_timeout_ms=3000)
    with pytest.raises(KafkaError):
        await admin.start()
        await admin.list_topics()
    await admin.close()


async def test_a_wrong_password_is_refused(settings: Settings) -> None:
    from pydantic import SecretStr

    forged = credentials.as_principal(settings, "producer").model_copy(
        update={"kafka_sasl_password": SecretStr("not-the-password")}
    )
    producer = AIOKafkaProducer(**aiokafka_options(forged), request_timeout_ms=3000)
    with pytest.raises((KafkaError, KafkaConnectionError)):
        await producer.start()
    await producer.stop()


async def test_the_producer_sees_only_the_topics_it_may_write(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**as_(settings, "producer"), request_timeout_ms=10_000)
    await admin.start()
    try:
        visible = {name for name in await admin.list_topics() if name.startswith(f"{settings.topic_prefix}.")}
    finally:
        await admin.close()
    assert visible == {settings.topic(topics.DATA_ARRIVED), settings.topic(topics.LABELS_ARRIVED)}


STREAMS = {  # principal: what it may do on a model's input and output topics
    "producer": {("inputs", "WRITE")},
    "consumer": {("outputs", "READ")},
    "serving": {("inputs", "READ"), ("outputs", "WRITE")},
    "monitor": set(),
}


@pytest.mark.parametrize("principal", sorted(STREAMS))
async def test_a_models_stream_topics_are_written_and_read_only_as_the_stream_grants_say(
    settings: Settings, principal: Principal
) -> None:
    from shared.runtime.broker import ensure_topics

    model = "acl-streamed"
    specs = [topics.TopicSpec(f(model), 1) for f in (topics.inputs, topics.outputs)]
    await ensure_topics(credentials.as_principal(settings, "admin"), catalog=specs, acls=False)
    observed = set()
    async with clients(settings, principal) as (producer, consumer, client):
        for direction, name in (("inputs", topics.inputs(model)), ("outputs", topics.outputs(model))):
            if await write_outcome(producer, settings.topic(name)) == "allowed":
                observed.add((direction, "WRITE"))
            if await read_outcome(client, consumer, settings.topic(name)) == "allowed":
                observed.add((direction, "READ"))
    assert observed == STREAMS[principal]


@pytest.mark.parametrize(
    ("principal", "suffix"), [("serving", "scorer.r1"), ("serving", "other"), ("producer", "scorer.r1")]
)
async def test_only_serving_opens_transactions_and_only_as_a_scorer(
    settings: Settings, principal: Principal, suffix: str
) -> None:
    producer = AIOKafkaProducer(
        **as_(settings, principal), transactional_id=settings.topic(suffix), request_timeout_ms=10_000
    )
    try:
        await asyncio.wait_for(producer.start(), 30)
        outcome = "allowed"
    except KafkaError:
        outcome = "denied"
    finally:
        await producer.stop()
    assert outcome == ("allowed" if (principal, suffix) == ("serving", "scorer.r1") else "denied")
