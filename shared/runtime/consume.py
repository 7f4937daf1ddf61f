"""The consuming side of the bus: consumer groups, one transaction per batch (inbox claim, handler,
outbox staging), retries with backoff, waiting out outages, and dead letters.

A handler receives the typed event and a unit of work whose store is already inside a
transaction; events it returns (or `emit`s) are written to the outbox in that same transaction
and published by the relay once it commits. The Kafka offset is committed only after that
transaction, so a crash anywhere means redelivery, and the inbox makes redelivery harmless.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.middlewares import AckPolicy
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.contract.envelope import Envelope, EnvelopeError, Headers, decode
from shared.contract.events import DeadLettered, Event
from shared.runtime.artifacts import ArtifactUnavailable
from shared.runtime.broker import raw_body, tolerant_parser
from shared.runtime.consumermetrics import ConsumerMetrics
from shared.runtime.db import claim_inbox, claim_inbox_many
from shared.runtime.errors import Refused, is_transient
from shared.runtime.settings import Settings
from shared.runtime.uow import SpanTracing, SqlUnitOfWork, StoreFactory, no_store

log = logging.getLogger("shared.runtime.bus")
HandlerResult = Event | Sequence[Event] | None
Handler = Callable[[Any, Any], Awaitable[HandlerResult]]
Stage = Callable[..., str]
# A batched handler's span links at most this many of the events it handles.
MAX_SPAN_LINKS = 128


@dataclass(frozen=True)
class Route:
    """Who handles a topic's messages in a consumer group."""

    handler: Handler
    allowed: frozenset[str] | None
    batched: bool = False
    store: StoreFactory = no_store


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


class Consumers:
    """A service's consumer groups: what handles each topic, and the handling itself."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession] | None,
        tracer: trace.Tracer,
        *,
        stage: Stage,
        publish: Callable[[Event], Awaitable[str]],
        wake: Callable[[], None],
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sessions = sessions
        self.tracer = tracer
        self.tracing = SpanTracing(tracer)
        self._stage = stage
        self._publish = publish
        self._wake = wake
        self.started = False
        self._routes: dict[str, dict[str, Route]] = {}

    def consumer(
        self,
        topic: str,
        *,
        group: str,
        events: Sequence[type[Event]] | None = None,
        batched: bool = False,
        store: StoreFactory = no_store,
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
        if self.started:
            raise RuntimeError("register consumers before Bus.start()")
        allowed = frozenset(cls.event_type for cls in events) if events else None
        group_id = f"{self.settings.topic_prefix}.{group}"

        def register(handler: Handler) -> Handler:
            routes = self._routes.setdefault(group_id, {})
            full = self.settings.topic(topic)
            if full in routes:
                raise ValueError(f"{group} already has a handler for {topic}")
            routes[full] = Route(handler, allowed, batched, store)
            return handler

        return register

    def register(
        self,
        handlers: Mapping[type[Event], Sequence[Handler]],
        *,
        group: str,
        store: StoreFactory = no_store,
        batched: frozenset[type[Event]] = frozenset(),
    ) -> None:
        """Subscribe a service's HANDLERS table (event class → its handlers, called in order) under
        consumer group `group`; each topic comes from its event classes, and its handlers get a unit
        of work on `store(session)`. The handlers of an event class in `batched` get a poll's events
        of that class in one call."""
        by_topic: dict[str, list[type[Event]]] = {}
        for cls in handlers:
            by_topic.setdefault(cls.topic, []).append(cls)
        for topic, classes in by_topic.items():
            together = [cls in batched for cls in classes]
            if any(together) and len(classes) > 1:
                raise ValueError(f"{group}: a batched handler needs its topic ({topic}) to itself")
            table = {cls.event_type: tuple(handlers[cls]) for cls in classes}
            self.consumer(topic, group=group, events=classes, batched=any(together), store=store)(
                _dispatch(table, batched=any(together))
            )

    def subscriptions(self) -> dict[str, list[str]]:
        """Each consumer group this bus joins, with the full names of the topics it reads."""
        return {group_id: sorted(routes) for group_id, routes in self._routes.items()}

    def subscribe(self, broker: KafkaBroker) -> None:
        """Subscribe every group's topics on the broker (before it starts)."""
        self.started = True
        for group_id, routes in self._routes.items():
            if self.metrics is not None:
                for route in routes.values():
                    self.metrics.subscribed(group_id, route.allowed)
            on_batch = self._dispatcher(group_id, routes)
            on_batch.__name__ = group_id.rsplit(".", 1)[-1].replace("-", "_")
            broker.subscriber(
                *routes,
                group_id=group_id,
                batch=True,
                max_records=self.settings.consumer_batch_max,
                # FastStream waits this long for messages and, after an empty poll, as long again
                # before the next: the longest a message that arrives on an idle group waits.
                batch_timeout_ms=self.settings.consumer_poll_ms,
                # Room for a few large events (batches of predictions) per partition and fetch.
                max_partition_fetch_bytes=max(8 * 1024 * 1024, self.settings.max_message_bytes + 65_536),
                ack_policy=AckPolicy.MANUAL,
                decoder=raw_body,
                parser=tolerant_parser,
                auto_offset_reset="earliest",
                title=f"{group_id}:{','.join(sorted(routes))}",
            )(on_batch)

    def _dispatcher(self, group_id: str, routes: dict[str, Route]) -> Callable[[KafkaMessage], Awaitable[None]]:
        async def on_batch(message: KafkaMessage) -> None:
            raw = message.raw_message
            records: tuple[ConsumerRecord[bytes, bytes], ...] = raw if isinstance(raw, tuple) else (raw,)
            if self.metrics is not None:
                self.metrics.batch(message, group_id, records)
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
            self._wake()
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
        uow: SqlUnitOfWork[Any] = SqlUnitOfWork(
            store=route.store(session),
            envelope=cause,
            consumer=group_id,
            tracing=self.tracing,
            envelopes=tuple(envelopes),
            apart_runner=lambda work: self._apart(route, work),
            session=session,
        )
        events: Any = [e.event for e in envelopes] if route.batched else cause.event
        result = await route.handler(events, uow)
        for reason in uow.dropped:
            log.info("%s dropped %s %s: %s", group_id, cause.type, cause.id, reason)
            if self.metrics is not None:
                self.metrics.dropped.labels(group_id, cause.type).inc()
        returned = [result] if isinstance(result, Event) else (result or [])
        produced: list[tuple[Event, str | None]] = [*uow.pending, *((event, None) for event in returned)]
        for event, event_id in produced:
            self._stage(session, event, cause=cause, context=uow.trace_context, event_id=event_id)
        return bool(produced)

    async def _apart(self, route: Route, work: Callable[[Any], Awaitable[None]]) -> None:
        """Run `work` on the route's store in a transaction of its own."""
        assert self.sessions is not None
        async with self.sessions() as session, session.begin():
            await work(route.store(session))

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
                    self._wake()
                return None
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if self.metrics is not None:
                    self.metrics.failures.labels(group_id, envelope.type).inc()
                if isinstance(exc, Refused):
                    return ("refused", str(exc), attempt)
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
        record, envelope = letter.record, letter.envelope
        lineage = {"correlation_id": envelope.event.correlation_id, "causation_id": envelope.id} if envelope else {}
        dead = dead_letter(
            record,
            letter.headers,
            consumer=group_id,
            reason=letter.reason,
            kind=letter.kind,
            attempts=letter.attempts,
            max_bytes=self.settings.max_message_bytes,
            **lineage,
        )
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        log.warning("dead-lettering %s for %s: %s", where, group_id, letter.reason)
        try:
            await self._publish(dead)
        except Exception:
            log.exception("could not dead-letter; the message will be redelivered")
            return False
        if self.metrics is not None:
            self.metrics.dead_letters.labels(group_id).inc()
        return True

    async def _ack_or_rewind(self, message: KafkaMessage) -> None:
        try:
            await message.ack()
        except KafkaError:
            # The offset stays uncommitted: after a rebalance the message comes back, and the
            # inbox turns that redelivery into a no-op.
            log.warning("offset commit failed; the message may be redelivered", exc_info=True)


def dead_letter(
    record: ConsumerRecord[Any, Any],
    headers: Sequence[tuple[str, bytes]],
    *,
    consumer: str,
    reason: str,
    kind: str,
    attempts: int,
    max_bytes: int,
    **lineage: str,
) -> DeadLettered:
    """The dead letter of a message, kept whole with the reason. A value too large to carry in
    base64 within the size limit keeps only its start (the letter says so), so that an oversized
    message cannot block its partition."""
    value = record.value or b""
    kept = min(len(value), max_bytes // 2)
    original_id = dict(headers).get("ce_id")
    return DeadLettered(
        consumer=consumer,
        reason=reason,
        error_type=kind,
        attempts=attempts,
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


def _dispatch(table: Mapping[str, tuple[Handler, ...]], *, batched: bool) -> Handler:
    """One topic's handler: each handler of the event's class in turn, their events together."""

    async def handle(event: Any, uow: Any) -> list[Event]:
        kind = event[0].event_type if batched else event.event_type
        produced: list[Event] = []
        for handler in table[kind]:
            result = await handler(event, uow)
            produced.extend([result] if isinstance(result, Event) else (result or []))
        return produced

    return handle


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
