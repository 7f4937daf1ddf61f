"""The bus every service uses: a FastStream Kafka broker with CloudEvents envelopes,
dead-lettering, idempotent consumption (inbox) and a transactional outbox relay.

A consumer's handler receives the typed event and a HandlerContext whose session is
already inside a transaction; events it returns (or `emit`s) are written to the outbox
in that same transaction and published by the relay once it commits. The Kafka offset
is committed only after that transaction, so a crash anywhere means redelivery, and the
inbox makes redelivery harmless.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from sqlalchemy import delete, select, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import topics
from shared.artifacts import ArtifactUnavailable
from shared.db import OutboxRow, add_to_outbox, claim_inbox, claim_inbox_many, outbox_headers
from shared.envelope import Envelope, EnvelopeError, Headers, decode, encode
from shared.events import DeadLettered, Event
from shared.settings import Settings

log = logging.getLogger(__name__)
RELAY_TIMEOUT_SECONDS = 10.0
RELAY_HOLD_SECONDS = 30
E = TypeVar("E", bound=Event)
HandlerResult = Event | Sequence[Event] | None
Handler = Callable[[Any, "HandlerContext"], Awaitable[HandlerResult]]
# A batched handler's span links at most this many of the events it handles.
MAX_SPAN_LINKS = 128


@dataclass(frozen=True)
class Route:
    """Who handles a topic's messages in a consumer group."""

    handler: Handler
    allowed: frozenset[str] | None
    batched: bool = False


@dataclass(frozen=True)
class Work:
    """A decoded message waiting for its handler."""

    record: ConsumerRecord[bytes, bytes]
    headers: Headers
    route: Route
    envelope: Envelope


@dataclass(frozen=True)
class Letter:
    """A message to dead-letter, and why."""

    record: ConsumerRecord[bytes, bytes]
    headers: Headers
    kind: str
    reason: str
    attempts: int
    envelope: Envelope | None


class TransientError(Exception):
    """Raised by a handler for a failure worth retrying (a dependency is briefly away)."""


TRANSIENT = (
    TransientError,
    OperationalError,
    InterfaceError,
    KafkaError,
    ConnectionError,
    TimeoutError,
    ArtifactUnavailable,
)


def is_transient(exc: BaseException) -> bool:
    """Whether a handler failure is worth retrying with backoff."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT)


@dataclass
class HandlerContext:
    """What a handler gets besides its event: the envelope, its transaction, and emit().

    A batched handler's context has every envelope of its events in `envelopes`; `envelope` is the
    last of them (the cause of what the handler emits).
    """

    envelope: Envelope
    session: AsyncSession
    consumer: str
    envelopes: tuple[Envelope, ...] = ()
    pending: list[Event] = field(default_factory=list)
    tracer: trace.Tracer | None = None
    trace_context: otel_context.Context | None = None

    def emit(self, event: Event) -> None:
        """Publish `event` when (and only if) this handler's transaction commits."""
        self.pending.append(event)

    def current_traceparent(self) -> str | None:
        """The W3C traceparent of the handler's span (to keep, and continue later with continue_trace)."""
        carrier: dict[str, str] = {}
        inject(carrier)
        return carrier.get("traceparent")

    def start_trace(self, name: str) -> str | None:
        """Emit what this handler emits in a new trace (a new lifecycle), whose root span links to
        the span that published the event; returns the new trace's traceparent."""
        if self.tracer is None:
            return None
        cause = trace.get_current_span(extract({"traceparent": self.envelope.traceparent or ""})).get_span_context()
        span = self.tracer.start_span(
            name, context=otel_context.Context(), links=[trace.Link(cause)] if cause.is_valid else []
        )
        span.end()
        self.trace_context = trace.set_span_in_context(span)
        carrier: dict[str, str] = {}
        inject(carrier, context=self.trace_context)
        return carrier.get("traceparent")

    def continue_trace(self, traceparent: str | None, name: str) -> None:
        """Emit what this handler emits in an earlier trace (a lifecycle's): under a span that is a
        child of `traceparent`, linked to the handler's own span."""
        if not traceparent or self.tracer is None:
            return
        here = trace.get_current_span().get_span_context()
        parent = extract({"traceparent": traceparent})
        span = self.tracer.start_span(name, context=parent, links=[trace.Link(here)] if here.is_valid else [])
        span.end()
        self.trace_context = trace.set_span_in_context(span, parent)


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
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap}
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
        settings.kafka_bootstrap,
        client_id=settings.service_name,
        enable_idempotence=True,
        acks="all",
        max_request_size=settings.max_message_bytes + 65_536,
        security=kafka_security(settings),
        middlewares=middlewares,
        logger=logging.getLogger(f"modelbus.{settings.service_name}.broker"),
    )


async def _raw_body(message: StreamMessage[Any]) -> bytes:
    # The envelope is decoded by Bus._consume, which dead-letters what does not parse;
    # FastStream must not try (and fail) first.
    return message.body


async def _tolerant_parser(
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
        self._relay_wake = asyncio.Event()
        self._relay_task: asyncio.Task[None] | None = None
        self._held: dict[str, float] = {}
        self.running = False
        self._routes: dict[str, dict[str, Route]] = {}

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
    ) -> str:
        """Write `event` to the outbox in the session's transaction; the relay publishes it.

        Its trace context is the current span's, or `context`'s when given.
        """
        if cause is not None:
            update: dict[str, Any] = {}
            if "correlation_id" not in event.model_fields_set:
                update["correlation_id"] = cause.event.correlation_id
            if "causation_id" not in event.model_fields_set:
                update["causation_id"] = cause.id
            event = event.model_copy(update=update) if update else event
        carrier: dict[str, str] = {}
        inject(carrier, context=context)
        message = encode(event, source=self.source, trace_headers=carrier)
        add_to_outbox(session, topic=self.settings.topic(event.topic), message=message)
        return message.event_id

    def wake_relay(self) -> None:
        """Have the relay publish now what a committed transaction staged (instead of at its next poll)."""
        self._relay_wake.set()

    # ------------------------------------------------------------------ consuming

    def consumer(
        self,
        topic: str,
        *,
        group: str,
        events: Sequence[type[Event]] | None = None,
        batched: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Register `handler(event, ctx)` for a catalog topic under consumer group `group`.

        All topics of one group share one Kafka consumer (one group membership, one rebalance at
        start), and the message's topic picks the handler. A `batched` handler is called as
        `handler(events, ctx)` with the events of consecutive messages of its topic in one poll
        (one transaction, one call: for high-volume topics whose handler costs per call, not per
        event); when a batch fails it is called again with one event at a time.
        """
        if self.sessions is None:
            raise RuntimeError("a consuming Bus needs a database session factory")
        if self.running:
            raise RuntimeError("register consumers before Bus.start()")
        allowed = frozenset(cls.event_type for cls in events) if events else None
        group_id = f"{self.settings.topic_prefix}.{group}"

        def register(handler: Handler) -> Handler:
            routes = self._routes.setdefault(group_id, {})
            full = self.settings.topic(topic)
            if full in routes:
                raise ValueError(f"{group} already has a handler for {topic}")
            routes[full] = Route(handler, allowed, batched)
            return handler

        return register

    def subscriptions(self) -> dict[str, list[str]]:
        """Each consumer group this bus joins, with the full names of the topics it reads."""
        return {group_id: sorted(routes) for group_id, routes in self._routes.items()}

    def _subscribe(self) -> None:
        for group_id, routes in self._routes.items():
            on_batch = self._dispatcher(group_id, routes)
            on_batch.__name__ = group_id.rsplit(".", 1)[-1].replace("-", "_")
            self.broker.subscriber(
                *routes,
                group_id=group_id,
                batch=True,
                max_records=self.settings.consumer_batch_max,
                # Room for a few large events (batches of predictions) per partition and fetch.
                max_partition_fetch_bytes=max(8 * 1024 * 1024, self.settings.max_message_bytes + 65_536),
                ack_policy=AckPolicy.MANUAL,
                decoder=_raw_body,
                parser=_tolerant_parser,
                auto_offset_reset="earliest",
                title=f"{group_id}:{','.join(sorted(routes))}",
            )(on_batch)

    def _dispatcher(self, group_id: str, routes: dict[str, Route]) -> Callable[[KafkaMessage], Awaitable[None]]:
        async def on_batch(message: KafkaMessage) -> None:
            raw = message.raw_message
            records: tuple[ConsumerRecord[bytes, bytes], ...] = raw if isinstance(raw, tuple) else (raw,)
            await self._consume(message, records, routes, group_id)

        return on_batch

    def _span(self, group_id: str, envelope: Envelope) -> AbstractContextManager[trace.Span]:
        """The handler's span: a child of the span that published the event (from its traceparent)."""
        carrier = {
            name: value
            for name, value in (("traceparent", envelope.traceparent), ("tracestate", envelope.tracestate))
            if value
        }
        return self.tracer.start_as_current_span(
            f"{group_id} handle {envelope.type}",
            context=extract(carrier),
            attributes={
                "modelbus.consumer": group_id,
                "modelbus.event_type": envelope.type,
                "modelbus.event_id": envelope.id,
                "modelbus.correlation_id": envelope.event.correlation_id,
                "messaging.kafka.message.key": envelope.event.key(),
            },
        )

    def _batch_span(self, group_id: str, envelopes: Sequence[Envelope]) -> AbstractContextManager[trace.Span]:
        """A batched handler's span: its own trace, linked to the spans that published its events."""
        links = []
        for envelope in envelopes[:MAX_SPAN_LINKS]:
            if envelope.traceparent:
                carrier = {"traceparent": envelope.traceparent}
                linked = trace.get_current_span(extract(carrier)).get_span_context()
                if linked.is_valid:
                    links.append(trace.Link(linked))
        first = envelopes[0]
        return self.tracer.start_as_current_span(
            f"{group_id} handle {first.type} x{len(envelopes)}",
            context=otel_context.Context(),
            links=links,
            attributes={
                "modelbus.consumer": group_id,
                "modelbus.event_type": first.type,
                "modelbus.events": len(envelopes),
                "modelbus.event_ids": [e.id for e in envelopes[:MAX_SPAN_LINKS]],
            },
        )

    async def _consume(
        self,
        message: KafkaMessage,
        records: Sequence[ConsumerRecord[bytes, bytes]],
        routes: dict[str, Route],
        group_id: str,
    ) -> None:
        """Handle a batch: all of it in one transaction; if anything fails, message by message."""
        work: list[Work] = []
        letters: list[Letter] = []
        for record in records:
            headers: Headers = [(name, bytes(data)) for name, data in (record.headers or ())]
            route = routes[record.topic]
            try:
                envelope = decode(
                    record.value, headers, allowed=route.allowed, max_bytes=self.settings.max_message_bytes
                )
            except EnvelopeError as exc:
                letters.append(Letter(record, headers, exc.kind, exc.reason, 1, None))
                continue
            work.append(Work(record, headers, route, envelope))
        # A batch is tried in one transaction; a lone message (or a batch that failed) goes the
        # one-by-one way, where each message has its own retries and, at worst, its dead letter.
        culprit = None
        if len(work) > 1:
            culprit = await self._handle_together(work, group_id)
            if culprit is None:
                work = []
        for index, item in enumerate(work):
            # The message whose handler broke the batch has had its first attempt already.
            tried = 1 if index == culprit else 0
            span = (
                self._batch_span(group_id, [item.envelope])
                if item.route.batched
                else self._span(group_id, item.envelope)
            )
            with span:
                failure = await self._handle_with_retries(item.envelope, item.route, group_id, tried=tried)
            if failure is not None:
                kind, reason, attempts = failure
                letters.append(Letter(item.record, item.headers, kind, reason, attempts, item.envelope))
        for letter in letters:
            if not await self._dead_letter(letter, group_id):
                # Not dead-lettered, so not committed: the batch comes back, and the inbox skips
                # what was already handled.
                await asyncio.sleep(self.settings.handler_backoff_seconds)
                await message.nack()
                return
        await self._ack_or_rewind(message)

    async def _handle_together(self, work: Sequence[Work], group_id: str) -> int | None:
        """Handle a batch in one transaction; None if done, else (nothing applied) the index that failed.

        The index is -1 when no single message is to blame (the commit, or a batched handler, failed).
        """
        assert self.sessions is not None
        staged, current = False, -1
        try:
            async with self.sessions() as session, session.begin():
                # One inbox statement for the whole batch; a ce_id seen twice is handled once.
                fresh = await claim_inbox_many(
                    session, consumer=group_id, events=[(item.envelope.id, item.envelope.type) for item in work]
                )
                for current, run in _runs(work):
                    claimed = [item.envelope for item in run if item.envelope.id in fresh]
                    fresh.difference_update(envelope.id for envelope in claimed)
                    if run[0].route.batched:
                        current = -1  # a batched handler: which of its events broke it is not known
                        with self._batch_span(group_id, claimed or [run[0].envelope]):
                            staged |= await self._invoke(session, claimed, run[0].route, group_id)
                        continue
                    with self._span(group_id, run[0].envelope):
                        if not claimed:
                            log.info("duplicate %s %s skipped", run[0].envelope.type, run[0].envelope.id)
                            continue
                        staged |= await self._invoke(session, claimed, run[0].route, group_id)
                current = -1  # the commit itself failed: no message is to blame
        except Exception as exc:
            # Nothing of the batch was applied; the one-by-one path retries, or dead-letters the culprit.
            log.info("a batch of %d failed (%r); handling it message by message", len(work), exc)
            return current
        if staged:
            self._relay_wake.set()
        return None

    async def _handle_one(self, session: AsyncSession, envelope: Envelope, route: Route, group_id: str) -> bool:
        """Claim the inbox, run the handler and stage what it emits; True if it emitted anything."""
        if not await claim_inbox(session, consumer=group_id, event_id=envelope.id, event_type=envelope.type):
            log.info("duplicate %s %s skipped", envelope.type, envelope.id)
            return False
        return await self._invoke(session, [envelope], route, group_id)

    async def _invoke(self, session: AsyncSession, envelopes: Sequence[Envelope], route: Route, group_id: str) -> bool:
        """Run the handler on claimed events and stage what it emits; True if it emitted anything."""
        if not envelopes:
            return False
        cause = envelopes[-1]
        ctx = HandlerContext(
            envelope=cause, session=session, consumer=group_id, envelopes=tuple(envelopes), tracer=self.tracer
        )
        events: Any = [e.event for e in envelopes] if route.batched else cause.event
        result = await route.handler(events, ctx)
        produced = [*ctx.pending, *([result] if isinstance(result, Event) else (result or []))]
        for event in produced:
            self.stage(session, event, cause=cause, context=ctx.trace_context)
        return bool(produced)

    async def _handle_with_retries(
        self, envelope: Envelope, route: Route, group_id: str, *, tried: int = 0
    ) -> tuple[str, str, int] | None:
        """Handle one message in its own transaction, retrying transient failures with backoff.

        Returns None when handled (or a duplicate), else (kind, reason, attempts) for its dead letter.
        """
        assert self.sessions is not None
        delay = self.settings.handler_backoff_seconds
        attempts = self.settings.handler_max_attempts
        attempt, outage_pause = tried, 0.5
        while attempt < attempts:
            attempt += 1
            if attempt > 1:
                await asyncio.sleep(delay * 2 ** (attempt - 2))
            try:
                async with self.sessions() as session, session.begin():
                    produced = await self._handle_one(session, envelope, route, group_id)
                if produced:
                    self._relay_wake.set()
                return None
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if not is_transient(exc):
                    log.exception("handler failed on %s %s", envelope.type, envelope.id)
                    return ("handler", reason, attempt)
                # A dependency that is away (the database restarting, the artifact store down) is
                # no fault of this message: it costs no attempt and is never dead-lettered; the
                # consumer holds its position until the dependency is back.
                if isinstance(exc, ArtifactUnavailable):
                    log.warning("%s: artifact store unavailable, holding %s: %s", group_id, envelope.id, exc)
                    await asyncio.sleep(outage_pause)
                    outage_pause = min(5.0, outage_pause * 2)
                    attempt -= 1
                    continue
                if not await self._database_answers():
                    await self._wait_for_database(group_id)
                    attempt -= 1
                    continue
                if attempt == attempts:
                    return ("transient-exhausted", f"gave up after {attempts} attempts: {reason}", attempt)
                log.warning("transient failure on %s (attempt %d/%d): %s", envelope.id, attempt, attempts, reason)
        return ("transient-exhausted", f"gave up after {attempts} attempts", attempts)

    async def _database_answers(self) -> bool:
        """Whether the database takes a trivial query right now."""
        assert self.sessions is not None
        try:
            async with self.sessions() as session:
                await asyncio.wait_for(session.execute(text("SELECT 1")), timeout=5)
        except Exception:
            return False
        return True

    async def _wait_for_database(self, group_id: str) -> None:
        """Hold this consumer until the database answers again (backoff up to 5 s)."""
        began, pause, said = time.monotonic(), 0.2, 0.0
        while not await self._database_answers():
            waited = time.monotonic() - began
            if waited - said >= 10 or said == 0:
                log.warning("%s: database unreachable for %.0f s; consumption waits for it", group_id, waited)
                said = waited or 0.001
            await asyncio.sleep(pause)
            pause = min(5.0, pause * 2)
        log.info("%s: database answers again after %.1f s", group_id, time.monotonic() - began)

    async def _dead_letter(self, letter: Letter, group_id: str) -> bool:
        """Publish a dead letter for a message; False if even that failed."""
        record, headers, envelope = letter.record, letter.headers, letter.envelope
        # A value too large to carry in base64 within the size limit keeps only its start (the
        # letter says so), so that an oversized message cannot block its partition.
        value = record.value or b""
        kept = min(len(value), self.settings.max_message_bytes // 2)
        original_id = dict(headers).get("ce_id")
        lineage = {"correlation_id": envelope.event.correlation_id, "causation_id": envelope.id} if envelope else {}
        dead = DeadLettered(
            consumer=group_id,
            reason=letter.reason,
            error_type=letter.kind,
            attempts=letter.attempts,
            original_topic=record.topic,
            original_partition=record.partition,
            original_offset=record.offset,
            original_key_b64=base64.b64encode(record.key).decode() if record.key is not None else None,
            original_value_b64=base64.b64encode(value[:kept]).decode(),
            original_size_bytes=len(value),
            original_truncated=kept < len(value),
            original_headers=[(name, base64.b64encode(data).decode()) for name, data in headers],
            original_event_id=original_id.decode("utf-8", "replace") if original_id else None,
            **lineage,
        )
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        log.warning("dead-lettering %s for %s: %s", where, group_id, letter.reason)
        try:
            await self.publish(dead)
        except Exception:
            log.exception("could not dead-letter; the message will be redelivered")
            return False
        return True

    async def _ack_or_rewind(self, message: KafkaMessage) -> None:
        try:
            await message.ack()
        except KafkaError:
            # The offset stays uncommitted: after a rebalance the message comes back, and the
            # inbox turns that redelivery into a no-op.
            log.warning("offset commit failed; the message may be redelivered", exc_info=True)

    # ------------------------------------------------------------------ outbox relay

    async def relay_once(self, *, limit: int = 200) -> int:
        """Publish staged outbox rows of this platform (its topic prefix) in order; returns how many.

        A topic the broker refuses (deleted, not authorised) is held back for a while, with its
        rows, and does not block the others.
        """
        assert self.sessions is not None
        now = time.monotonic()
        self._held = {topic: until for topic, until in self._held.items() if until > now}
        query = (
            select(OutboxRow)
            .where(
                OutboxRow.published_at.is_(None),
                OutboxRow.topic.startswith(f"{self.settings.topic_prefix}.", autoescape=True),
            )
            .order_by(OutboxRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if self._held:
            query = query.where(OutboxRow.topic.not_in(list(self._held)))
        async with self.sessions() as session, session.begin():
            rows = (await session.scalars(query)).all()
            try:
                await asyncio.wait_for(self._publish_rows(rows), timeout=RELAY_TIMEOUT_SECONDS)
                published = list(rows)
            except Exception as exc:
                # One by one, so that a refused topic holds back only its own rows (what went
                # out before the failure may go twice; consumers drop duplicates by ce_id).
                log.warning("outbox relay: batch of %d failed (%r); publishing one by one", len(rows), exc)
                published = await self._relay_one_by_one(rows)
            for row in published:
                row.published_at = datetime.now(UTC)
            if published:
                await session.execute(
                    delete(OutboxRow).where(OutboxRow.published_at < datetime.now(UTC) - timedelta(days=1))
                )
        return len(published)

    async def _publish_rows(self, rows: Sequence[OutboxRow]) -> None:
        # Sent in order (an unknown topic blocks already here, waiting for its metadata),
        # acknowledged together.
        acks = [await self._send_row(row) for row in rows]
        await asyncio.gather(*acks)

    async def _send_row(self, row: OutboxRow) -> asyncio.Future[Any]:
        headers = outbox_headers(row)
        carrier = {n: v.decode() for n, v in headers if n in ("traceparent", "tracestate")}
        token = otel_context.attach(extract(carrier))
        try:
            return await self._send(row.topic, row.key, row.value, [h for h in headers if h[0] not in carrier])
        finally:
            otel_context.detach(token)

    async def _relay_one_by_one(self, rows: Sequence[OutboxRow]) -> list[OutboxRow]:
        published = []
        for row in rows:
            if row.topic in self._held:
                continue
            try:
                await asyncio.wait_for(self._publish_rows([row]), timeout=RELAY_TIMEOUT_SECONDS)
            except Exception as exc:
                self._held[row.topic] = time.monotonic() + RELAY_HOLD_SECONDS
                log.error(
                    "outbox relay: %s refused %s (%r); its rows wait %d s",
                    row.topic,
                    row.event_id,
                    exc,
                    RELAY_HOLD_SECONDS,
                )
                continue
            published.append(row)
        return published

    async def _relay_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._relay_wake.wait(), timeout=self.settings.outbox_poll_seconds)
            self._relay_wake.clear()
            try:
                while await self.relay_once() > 0:
                    pass
            except Exception:
                log.warning("outbox relay failed; retrying", exc_info=True)
                await asyncio.sleep(self.settings.outbox_poll_seconds)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Connect, start the subscribers and, when there is a database, the outbox relay."""
        self._subscribe()
        await self.broker.start()
        if self.sessions is not None:
            self._relay_task = asyncio.create_task(self._relay_forever(), name="outbox-relay")
        self.running = True

    async def stop(self) -> None:
        """Stop the relay and the broker."""
        self.running = False
        if self._relay_task is not None:
            self._relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay_task
        await self.broker.stop()


def _runs(work: Sequence[Work]) -> list[tuple[int, list[Work]]]:
    """The batch as handler calls, in order: consecutive messages of one batched route together,
    every other message alone; each with the index of its first message."""
    runs: list[tuple[int, list[Work]]] = []
    for index, item in enumerate(work):
        if runs and item.route.batched and runs[-1][1][-1].route is item.route:
            runs[-1][1].append(item)
        else:
            runs.append((index, [item]))
    return runs


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
                topic_configs={"cleanup.policy": "compact"} if spec.compacted else {},
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


async def publish_events(settings: Settings, *events: Event, source: str) -> None:
    """Publish events from a short-lived producer named `source` (a script, a test, a benchmark)."""
    bus = Bus(settings.model_copy(update={"service_name": source}))
    await bus.start()
    try:
        for event in events:
            await bus.publish(event)
    finally:
        await bus.stop()
