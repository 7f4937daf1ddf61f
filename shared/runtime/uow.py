"""The unit of work a handler gets besides its event: its service's store inside one transaction,
the envelope(s) it handles, emit(), and where what it emits goes in the traces.

The bus builds a `SqlUnitOfWork` per message (or per batch) on the transaction that also claims the
inbox and stages the outbox; `shared.runtime.memory` builds the in-memory twin on fake stores for
the unit tests. Handlers cannot tell them apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contract.envelope import Envelope
from shared.contract.events import Event

S = TypeVar("S")


class Tracing(Protocol):
    """Where a handler's emitted events go in the traces (OpenTelemetry, or a recording twin)."""

    def current(self) -> str | None:
        """The traceparent of the handler's own span."""

    def start(self, cause: Envelope, name: str) -> tuple[str | None, otel_context.Context | None]:
        """A new trace whose root links to the span that published `cause`: (traceparent, context)."""

    def resume(self, traceparent: str, name: str) -> otel_context.Context | None:
        """A span in an earlier trace, child of `traceparent`, linked to the handler's span."""


@dataclass(frozen=True)
class SpanTracing:
    """Tracing on OpenTelemetry spans."""

    tracer: trace.Tracer

    def current(self) -> str | None:
        """The W3C traceparent of the current span."""
        carrier: dict[str, str] = {}
        inject(carrier)
        return carrier.get("traceparent")

    def start(self, cause: Envelope, name: str) -> tuple[str | None, otel_context.Context | None]:
        """A root span linked to the cause's span; returns its traceparent and context."""
        linked = trace.get_current_span(extract({"traceparent": cause.traceparent or ""})).get_span_context()
        span = self.tracer.start_span(
            name, context=otel_context.Context(), links=[trace.Link(linked)] if linked.is_valid else []
        )
        span.end()
        context = trace.set_span_in_context(span)
        carrier: dict[str, str] = {}
        inject(carrier, context=context)
        return carrier.get("traceparent"), context

    def resume(self, traceparent: str, name: str) -> otel_context.Context | None:
        """A child span of `traceparent`, linked to the current span."""
        here = trace.get_current_span().get_span_context()
        parent = extract({"traceparent": traceparent})
        span = self.tracer.start_span(name, context=parent, links=[trace.Link(here)] if here.is_valid else [])
        span.end()
        return trace.set_span_in_context(span, parent)


@dataclass
class UnitOfWork(Generic[S]):
    """One handler call's work: the store (in the call's transaction), what it handles, what it emits.

    A batched handler's unit of work has every envelope of its events in `envelopes`; `envelope` is
    the last of them (the cause of what the handler emits).
    """

    store: S
    envelope: Envelope
    consumer: str
    tracing: Tracing | None = None
    envelopes: tuple[Envelope, ...] = ()
    # What the handler emitted, with the ce_id each will carry.
    pending: list[tuple[Event, str]] = field(default_factory=list)
    trace_context: otel_context.Context | None = None
    # Runs work on the store in a transaction of its own, kept even if the handler's rolls back.
    apart_runner: Callable[[Callable[[S], Awaitable[None]]], Awaitable[None]] | None = None
    # Why the event changed nothing, when it came too late to (see `drop`).
    dropped: list[str] = field(default_factory=list)

    def emit(self, event: Event) -> str:
        """Publish `event` when (and only if) this unit of work commits; returns the ce_id it will carry
        (so a later event can name it as its cause)."""
        event_id = str(uuid.uuid4())
        self.pending.append((event, event_id))
        return event_id

    def drop(self, reason: str) -> None:
        """Say that the event is late, about something that has since ended (an analysis of a
        rollout already promoted): it changes nothing, and is counted as dropped with the reason
        (`modelbus_events_dropped`, as Kafka Streams counts the late records it drops), never
        silently ignored."""
        self.dropped.append(reason)

    async def apart(self, work: Callable[[S], Awaitable[None]]) -> None:
        """Do `work` on the store in a transaction of its own, which stands even when this unit of
        work is rolled back (a refusal that must be kept while the refused command is not)."""
        if self.apart_runner is None:
            raise RuntimeError("this unit of work cannot run work apart")
        await self.apart_runner(work)

    def current_traceparent(self) -> str | None:
        """The W3C traceparent of the handler's span (to keep, and continue later with continue_trace)."""
        return self.tracing.current() if self.tracing is not None else None

    def start_trace(self, name: str) -> str | None:
        """Emit what this handler emits in a new trace (a new lifecycle), whose root span links to
        the span that published the event; returns the new trace's traceparent."""
        if self.tracing is None:
            return None
        traceparent, self.trace_context = self.tracing.start(self.envelope, name)
        return traceparent

    def continue_trace(self, traceparent: str | None, name: str) -> None:
        """Emit what this handler emits in an earlier trace (a lifecycle's): under a span that is a
        child of `traceparent`, linked to the handler's own span."""
        if not traceparent or self.tracing is None:
            return
        self.trace_context = self.tracing.resume(traceparent, name)


@dataclass
class SqlUnitOfWork(UnitOfWork[S]):
    """The unit of work on PostgreSQL: the store is bound to `session`, already in a transaction."""

    session: AsyncSession = field(kw_only=True)


StoreFactory = Callable[[AsyncSession], Any]


def caused_by(event: Event, cause: Envelope) -> Event:
    """`event` in the lifecycle of `cause`: its correlation id, and `cause` as its causation,
    unless the handler set them itself."""
    update: dict[str, Any] = {}
    if "correlation_id" not in event.model_fields_set:
        update["correlation_id"] = cause.event.correlation_id
    if "causation_id" not in event.model_fields_set:
        update["causation_id"] = cause.id
    return event.model_copy(update=update) if update else event


OwnTransaction = Callable[[], AbstractAsyncContextManager[AsyncSession]]


def no_store(session: AsyncSession) -> None:
    """The store of a service whose handlers use the session directly."""
    return None


# A unit of work with no store of its own: a handler that works on the session directly.
HandlerContext = SqlUnitOfWork[None]
