"""The bus every service uses: a FastStream Kafka broker with CloudEvents envelopes,
dead-lettering, idempotent consumption (inbox) and a transactional outbox relay.

The parts live in their own modules: `broker` (Kafka connection and topics), `consume` (consumer
groups, transactions, retries, dead letters), `outbox` (the relay) and `uow` (what a handler
gets). A `Bus` puts them together for one process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaMessage
from faststream.middlewares import AckPolicy
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.contract.envelope import Envelope, EnvelopeError, Headers, decode, encode
from shared.contract.events import Event
from shared.runtime import retention
from shared.runtime.broker import make_broker, raw_body, tolerant_parser
from shared.runtime.consume import Consumers, Handler
from shared.runtime.consumermetrics import ConsumerMetrics
from shared.runtime.db import add_to_outbox
from shared.runtime.outbox import OutboxRelay
from shared.runtime.settings import Settings
from shared.runtime.tasks import cancel_and_wait
from shared.runtime.uow import StoreFactory, caused_by, no_store

log = logging.getLogger("shared.runtime.bus")
E = TypeVar("E", bound=Event)
STOP_SECONDS = 20


class Bus:
    """A service's connection to the event bus."""

    def __init__(
        self,
        settings: Settings,
        *,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.broker = make_broker(settings, tracer_provider=tracer_provider, registry=registry)
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("modelbus.bus")
        self.source = f"/modelbus/{settings.service_name}"
        self.consumers = Consumers(
            settings,
            sessions,
            self.tracer,
            stage=self.stage,
            publish=self.publish,
            wake=self.wake_relay,
            metrics=ConsumerMetrics(registry) if registry is not None else None,
        )
        self.relay = OutboxRelay(settings, sessions, self._send) if sessions is not None else None
        self._relay_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self.running = False

    # ------------------------------------------------------------------ publishing

    async def publish(self, event: Event, *, event_id: str | None = None) -> str:
        """Publish one event now (not transactional: for producers and the CLI); returns its ce_id.

        Inside a span, the event carries that span's trace context (the broker's telemetry
        middleware adds it): its consumers' spans join that trace.
        """
        message = encode(event, source=self.source, event_id=event_id)
        await self.publish_raw(self.settings.topic(event.topic), message.key, message.value, message.headers)
        return message.event_id

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> None:
        """Publish bytes and headers as they are (dead letters, replays), waiting for the broker's ack."""
        await (await self._send(topic, key, value, headers))

    async def _send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> asyncio.Future[Any]:
        # Queued in call order (the idempotent producer keeps that order per partition); the
        # returned future resolves on the broker's acknowledgement.
        future: asyncio.Future[Any] = await self.broker.publish(
            value,
            topic=topic,
            key=key,
            headers={name: data.decode("utf-8", "surrogateescape") for name, data in headers},
            no_confirm=True,
        )
        return future

    def stage(
        self,
        session: AsyncSession,
        event: Event,
        *,
        cause: Envelope | None = None,
        context: otel_context.Context | None = None,
        event_id: str | None = None,
    ) -> str:
        """Write `event` to the outbox in the session's transaction; the relay publishes it.

        Its trace context is the current span's, or `context`'s when given.
        """
        if cause is not None:
            event = caused_by(event, cause)
        carrier: dict[str, str] = {}
        inject(carrier, context=context)
        message = encode(event, source=self.source, event_id=event_id, trace_headers=carrier)
        add_to_outbox(
            session, topic=self.settings.topic(event.topic), message=message, sender=self.settings.service_name
        )
        return message.event_id

    def wake_relay(self) -> None:
        """Have the relay publish now what a committed transaction staged (instead of at its next poll)."""
        if self.relay is not None:
            self.relay.wake_event.set()

    async def relay_once(self, *, limit: int = 200) -> int:
        """Publish staged outbox rows of this platform in order; returns how many."""
        if self.relay is None:
            raise RuntimeError("a Bus without a database has no outbox")
        return await self.relay.relay_once(limit=limit)

    # ------------------------------------------------------------------ consuming

    def consumer(
        self,
        topic: str,
        *,
        group: str,
        events: Sequence[type[Event]] | None = None,
        batched: bool = False,
        store: StoreFactory = no_store,
    ) -> Callable[[Handler], Handler]:
        """Register `handler(event, uow)` for a catalog topic under consumer group `group` (see
        `Consumers.consumer`)."""
        if self.running:
            raise RuntimeError("register consumers before Bus.start()")
        return self.consumers.consumer(topic, group=group, events=events, batched=batched, store=store)

    def register(
        self,
        handlers: Mapping[type[Event], Sequence[Handler]],
        *,
        group: str,
        store: StoreFactory = no_store,
        batched: frozenset[type[Event]] = frozenset(),
    ) -> None:
        """Subscribe a service's HANDLERS table under consumer group `group` (see `Consumers.register`)."""
        if self.running:
            raise RuntimeError("register consumers before Bus.start()")
        self.consumers.register(handlers, group=group, store=store, batched=batched)

    def follow(self, cls: type[E], handler: Callable[[E], Awaitable[None]]) -> None:
        """Hand every `cls` event published from now on to `handler`, in this process alone.

        No consumer group, inbox or outbox: for state a process keeps in memory and can rebuild
        (serving's routing table), where every replica must see every event. A message that does
        not decode is logged and skipped (the consumer groups of the topic dead-letter it).
        """
        if self.running:
            raise RuntimeError("follow topics before Bus.start()")
        allowed = frozenset({cls.event_type})
        name = self.settings.topic(cls.topic)

        async def on_batch(message: KafkaMessage) -> None:
            raw = message.raw_message
            records: tuple[ConsumerRecord[bytes, bytes], ...] = raw if isinstance(raw, tuple) else (raw,)
            for record in records:
                headers = [(key, bytes(value)) for key, value in (record.headers or ())]
                try:
                    envelope = decode(record.value or b"", headers, allowed=allowed)
                except EnvelopeError as exc:
                    log.warning("%s at offset %d skipped: %s", name, record.offset, exc.reason)
                    continue
                try:
                    await handler(envelope.event)  # type: ignore[arg-type]
                except Exception:
                    log.exception("following %s: the handler failed on %s", name, envelope.id)

        on_batch.__name__ = f"follow_{cls.topic.replace('-', '_')}"
        self.broker.subscriber(
            name,
            group_id=None,
            batch=True,
            batch_timeout_ms=self.settings.consumer_poll_ms,
            auto_offset_reset="latest",
            ack_policy=AckPolicy.MANUAL,
            decoder=raw_body,
            parser=tolerant_parser,
            title=f"follow:{name}",
        )(on_batch)

    def subscriptions(self) -> dict[str, list[str]]:
        """Each consumer group this bus joins, with the full names of the topics it reads."""
        return self.consumers.subscriptions()

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Connect, start the subscribers and, when there is a database, the outbox relay."""
        self.consumers.subscribe(self.broker)
        await self.broker.start()
        if self.relay is not None:
            self._relay_task = asyncio.create_task(self.relay.run_forever(), name="outbox-relay")
            self._sweep_task = asyncio.create_task(self._sweep_forever(), name="retention")
        self.running = True

    async def sweep(self) -> retention.Swept:
        """Delete the inbox rows of this bus's groups and the published outbox rows that outlived
        their retention (shared.runtime.retention)."""
        assert self.sessions is not None
        return await retention.sweep(self.sessions, self.settings, self.subscriptions(), datetime.now(UTC))

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.warning("retention sweep failed; trying again later", exc_info=True)
            await asyncio.sleep(self.settings.retention_sweep_seconds)

    async def stop(self) -> None:
        """Stop the relay and the broker. A broker that cannot leave its groups in
        `STOP_SECONDS` (a coordinator gone, a leader moving) is abandoned with a warning: the
        group's session timeout hands its partitions on, and nothing uncommitted is lost."""
        self.running = False
        await cancel_and_wait(self._relay_task)
        await cancel_and_wait(self._sweep_task)
        try:
            async with asyncio.timeout(STOP_SECONDS):
                await self.broker.stop()
        except TimeoutError:
            log.warning("the broker did not stop in %d s; leaving it to the group's session timeout", STOP_SECONDS)


async def publish_events(settings: Settings, *events: Event, source: str) -> None:
    """Publish events from a short-lived producer named `source` (a script, a test, a benchmark)."""
    bus = Bus(settings.model_copy(update={"service_name": source}))
    await bus.start()
    try:
        for event in events:
            await bus.publish(event)
    finally:
        await bus.stop()
