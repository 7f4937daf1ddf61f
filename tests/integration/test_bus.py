"""The bus against the real Kafka and PostgreSQL: envelopes, tracing, dead letters, inbox, outbox."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.contract import topics
from shared.contract.envelope import Envelope, decode, encode
from shared.contract.events import DataArrived, RetrainRequested, TrainingStarted
from shared.ops.tools import read_all, read_dead_letters
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings
from shared.runtime.telemetry import make_tracer_provider
from shared.runtime.uow import HandlerContext
from tests.integration.conftest import eventually
from tests.integration.kafka_helpers import effects, produce, record_effect

SHA = "b" * 64


def arrival(dataset: str = "churn", version: str = "v1") -> DataArrived:
    return DataArrived(dataset=dataset, version=version, uri="s3://datasets/churn.csv", sha256=SHA)


def training_started(event: DataArrived) -> TrainingStarted:
    """What a trainer would emit for a DataArrived."""
    return TrainingStarted(
        model=event.dataset,
        run_id=f"run-{event.version}",
        trigger="data-arrived",
        dataset=event.dataset,
        dataset_version=event.version,
        spec_revision=1,
        candidates=["sklearn.linear_model.LogisticRegression"],
        code_version="test",
    )


async def start_recorder(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], start_bus: Any
) -> list[Envelope]:
    """Start a consumer of data-arrived that records each envelope (and an effect row)."""
    seen: list[Envelope] = []
    bus = Bus(settings, sessions=sessions)
    recording_consumer(bus, "recorder", seen)
    await start_bus(bus)
    return seen


def recording_consumer(bus: Bus, group: str, seen: list[Envelope]) -> None:
    @bus.consumer(topics.DATA_ARRIVED, group=group, events=[DataArrived])
    async def on_data(event: DataArrived, ctx: HandlerContext) -> None:
        seen.append(ctx.envelope)
        await record_effect(ctx.session, ctx.consumer, ctx.envelope.id, event.version)


async def test_published_event_arrives_with_cloudevents_headers_and_one_trace(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], start_bus: Any
) -> None:
    consumer_tracing = make_tracer_provider(settings.model_copy(update={"service_name": "it-consumer"}))
    producer_tracing = make_tracer_provider(settings.model_copy(update={"service_name": "it-producer"}))
    seen: list[Envelope] = []
    consumer = Bus(
        settings.model_copy(update={"service_name": "it-consumer"}), sessions=sessions, tracer_provider=consumer_tracing
    )
    recording_consumer(consumer, "recorder", seen)
    await start_bus(consumer)
    producer = await start_bus(
        Bus(settings.model_copy(update={"service_name": "it-producer"}), tracer_provider=producer_tracing)
    )

    sent = arrival()
    with producer_tracing.get_tracer("it").start_as_current_span("producer root") as root:
        event_id = await producer.publish(sent)
    trace_id = format(root.get_span_context().trace_id, "032x")

    async def arrived() -> bool:
        return bool(seen)

    await eventually(arrived, what="the consumer to receive the event")
    envelope = seen[0]
    assert envelope.id == event_id
    assert envelope.source == "/modelbus/it-producer"
    assert envelope.type == "DataArrived"
    assert envelope.event == sent
    assert envelope.traceparent is not None and envelope.traceparent.split("-")[1] == trace_id

    consumer_tracing.force_flush()
    producer_tracing.force_flush()
    async with httpx.AsyncClient(base_url=settings.trace_query_url) as client:
        spans: list[dict[str, Any]] = []

        async def traced() -> bool:
            response = await client.get(f"/api/traces/{trace_id}")
            if response.status_code != 200:
                return False
            trace = response.json()["data"][0]
            spans[:] = [{**s, "service": trace["processes"][s["processID"]]["serviceName"]} for s in trace["spans"]]
            return any(s["operationName"].endswith("handle DataArrived") for s in spans)

        await eventually(traced, what="the consumer's span in Jaeger")
    assert {"it-producer", "it-consumer"} <= {s["service"] for s in spans}
    handle = next(s for s in spans if s["operationName"].endswith("handle DataArrived"))
    assert handle["references"][0]["refType"] == "CHILD_OF"
    consumer_tracing.shutdown()
    producer_tracing.shutdown()


def _headers(event_id: str, event_type: str = "DataArrived") -> list[tuple[str, bytes]]:
    return [
        ("ce_id", event_id.encode()),
        ("ce_source", b"/it/raw"),
        ("ce_type", f"io.modelbus.{event_type}".encode()),
        ("ce_specversion", b"1.0"),
        ("content-type", b"application/json"),
    ]


async def test_malformed_and_invalid_messages_are_dead_lettered_and_the_next_one_is_handled(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], start_bus: Any
) -> None:
    seen = await start_recorder(settings, sessions, start_bus)
    topic = settings.topic(topics.DATA_ARRIVED)
    bad_json = b'{"dataset": "churn", "version": '
    no_uri = json.dumps({"dataset": "churn", "version": "v2"}).encode()
    await produce(settings, topic, bad_json, _headers("bad-json"), b"churn")
    await produce(settings, topic, no_uri, _headers("no-uri"), b"churn")
    good = encode(arrival(version="v3"), source="/it")
    await produce(settings, topic, good.value, good.headers, good.key)

    async def good_handled() -> bool:
        return await effects(sessions, good.event_id) == 1

    await eventually(good_handled, what="the good message after two bad ones")
    letters = {item.letter.original_event_id: item.letter for item in await read_dead_letters(settings)}
    assert set(letters) == {"bad-json", "no-uri"}
    assert letters["bad-json"].error_type == "parse"
    assert "body is not JSON" in letters["bad-json"].reason
    assert letters["no-uri"].error_type == "validation"
    assert "field 'uri': Field required" in letters["no-uri"].reason
    assert letters["no-uri"].consumer == f"{settings.topic_prefix}.recorder"
    assert letters["no-uri"].original_topic == topic
    assert base64.b64decode(letters["no-uri"].original_value_b64) == no_uri
    assert [e.event.version for e in seen] == ["v3"]


async def test_the_same_event_delivered_twice_is_handled_once(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], start_bus: Any
) -> None:
    seen = await start_recorder(settings, sessions, start_bus)
    topic = settings.topic(topics.DATA_ARRIVED)
    twice = encode(arrival(version="twice"), source="/it")
    for _ in range(2):
        await produce(settings, topic, twice.value, twice.headers, twice.key)
    sentinel = encode(arrival(version="after"), source="/it")
    await produce(settings, topic, sentinel.value, sentinel.headers, sentinel.key)

    async def sentinel_handled() -> bool:
        return await effects(sessions, sentinel.event_id) == 1

    await eventually(sentinel_handled, what="the message after the duplicate")
    assert await effects(sessions, twice.event_id) == 1
    assert [e.event.version for e in seen] == ["twice", "after"]


async def test_events_staged_in_the_outbox_are_published_only_when_the_transaction_commits(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], start_bus: Any
) -> None:
    tracing = make_tracer_provider(settings)
    bus = Bus(settings, sessions=sessions, tracer_provider=tracing)

    @bus.consumer(topics.DATA_ARRIVED, group="trainer-like", events=[DataArrived])
    async def on_data(event: DataArrived, ctx: HandlerContext) -> TrainingStarted:
        started = training_started(event)
        if event.version == "fails":
            ctx.emit(started)
            raise ValueError("the handler broke after emitting")
        return started

    await start_bus(bus)
    failing = await bus.publish(arrival(version="fails"))
    ok = arrival(version="ok")
    passing = await bus.publish(ok)

    async def published() -> bool:
        return any(r.key == b"churn" for r in await read_all(settings, topics.TRAINING_STARTED))

    await eventually(published, what="TrainingStarted from the committed handler")
    records = await read_all(settings, topics.TRAINING_STARTED)
    started = [decode(r.value, list(r.headers)) for r in records]
    assert [e.event.run_id for e in started] == ["run-ok"]  # type: ignore[attr-defined]
    assert started[0].event.causation_id == passing
    assert started[0].event.correlation_id == ok.correlation_id
    (cause,) = [
        decode(r.value, list(r.headers))
        for r in await read_all(settings, topics.DATA_ARRIVED)
        if dict(r.headers)["ce_id"].decode() == passing
    ]
    assert started[0].traceparent is not None and cause.traceparent is not None
    assert started[0].traceparent.split("-")[1] == cause.traceparent.split("-")[1], "one trace across the outbox"
    letters = await read_dead_letters(settings)
    assert [item.letter.original_event_id for item in letters] == [failing]
    assert "ValueError: the handler broke after emitting" in letters[0].letter.reason

    # Staged directly: a rolled-back transaction publishes nothing.
    retrain = RetrainRequested(model="churn", reason="operator", requested_by="it")
    async with sessions() as session:
        async with session.begin():
            bus.stage(session, retrain)
            await session.rollback()
    assert await bus.relay_once() == 0
    assert await read_all(settings, topics.RETRAIN_REQUESTED) == []


async def test_correlation_id_follows_the_lifecycle_and_causation_points_at_the_cause(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], start_bus: Any
) -> None:
    bus = Bus(settings, sessions=sessions)

    @bus.consumer(topics.DATA_ARRIVED, group="chain", events=[DataArrived])
    async def on_data(event: DataArrived, ctx: HandlerContext) -> TrainingStarted:
        return training_started(event)

    await start_bus(bus)
    cause = arrival(version=str(uuid.uuid4()))
    cause_id = await bus.publish(cause)

    async def published() -> bool:
        return bool(await read_all(settings, topics.TRAINING_STARTED))

    await eventually(published, what="the caused event")
    (record,) = await read_all(settings, topics.TRAINING_STARTED)
    caused = decode(record.value, list(record.headers)).event
    assert caused.correlation_id == cause.correlation_id
    assert caused.causation_id == cause_id


async def test_transient_failures_are_retried_then_dead_lettered(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], start_bus: Any
) -> None:
    attempts = 3
    from shared.runtime.errors import TransientError

    calls: list[str] = []
    bus = Bus(settings.model_copy(update={"handler_max_attempts": attempts}), sessions=sessions)

    @bus.consumer(topics.DATA_ARRIVED, group="flaky", events=[DataArrived])
    async def on_data(event: DataArrived, ctx: HandlerContext) -> None:
        calls.append(event.version)
        if event.version == "always-down" or calls.count("recovers") == 1:
            raise TransientError("dependency unavailable")
        await record_effect(ctx.session, ctx.consumer, ctx.envelope.id)

    await start_bus(bus)
    down = await bus.publish(arrival(version="always-down"))
    recovers = await bus.publish(arrival(version="recovers"))

    async def recovered() -> bool:
        return await effects(sessions, recovers) == 1

    await eventually(recovered, what="the second event to succeed on retry")
    assert calls.count("always-down") == attempts
    assert calls.count("recovers") == 2  # one transient failure, then success
    letters = await read_dead_letters(settings)
    assert [item.letter.original_event_id for item in letters] == [down]
    assert letters[0].letter.error_type == "transient-exhausted"
    assert letters[0].letter.attempts == attempts
    assert await effects(sessions, down) == 0


async def test_an_outbox_row_for_a_refused_topic_does_not_hold_back_the_others(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    from shared.runtime.db import add_to_outbox

    bus = Bus(settings, sessions=sessions)
    await bus.broker.start()
    try:
        retrain = RetrainRequested(model="churn", reason="operator", requested_by="it")
        async with sessions() as session, session.begin():
            # A topic that does not exist (auto-creation is off): the broker cannot take it.
            add_to_outbox(session, topic=settings.topic("no-such-topic"), message=encode(retrain, source="/it"))
            bus.stage(session, retrain)
        assert await bus.relay_once() == 1
        assert [decode(r.value, list(r.headers)).event for r in await read_all(settings, topics.RETRAIN_REQUESTED)] == [
            retrain
        ]
        assert await bus.relay_once() == 0, "the refused topic is held back, not retried at once"
    finally:
        await bus.broker.stop()


async def test_a_batched_consumer_gets_a_poll_in_one_call_and_a_poisoned_batch_is_split(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], start_bus: Any
) -> None:
    producer = await start_bus(Bus(settings.model_copy(update={"service_name": "it-producer"})))
    ids = [await producer.publish(arrival(version=f"v{i}")) for i in range(20)]
    await producer.publish(arrival(version="v0"), event_id=ids[0])  # redelivered: handled once
    poison = await producer.publish(arrival(version="poison"))
    ids.append(await producer.publish(arrival(version="after")))

    calls: list[list[str]] = []
    bus = Bus(settings, sessions=sessions)

    @bus.consumer(topics.DATA_ARRIVED, group="batched", events=[DataArrived], batched=True)
    async def on_data(events: list[DataArrived], ctx: HandlerContext) -> None:
        calls.append([e.version for e in events])
        assert [e.event for e in ctx.envelopes] == events and ctx.envelope is ctx.envelopes[-1]
        for envelope in ctx.envelopes:
            if envelope.event.version == "poison":  # type: ignore[attr-defined]
                raise ValueError("this dataset cannot be read")
            await record_effect(ctx.session, ctx.consumer, envelope.id, envelope.event.version)  # type: ignore[attr-defined]

    await start_bus(bus)

    async def all_handled() -> bool:
        return all([await effects(sessions, event_id) for event_id in ids])

    await eventually(all_handled, what="21 events through a batched consumer")
    assert [await effects(sessions, event_id) for event_id in ids] == [1] * len(ids)
    assert max(len(call) for call in calls) > 1, "the events of one poll come in one call"
    [letter] = [item.letter for item in await read_dead_letters(settings)]
    assert letter.original_event_id == poison and letter.error_type == "handler"
    assert "this dataset cannot be read" in letter.reason
    # The failed batch changed nothing; it was handled again one event at a time.
    assert ["poison"] in calls
