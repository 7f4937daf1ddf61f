"""The in-memory twin of the bus and its unit of work, for handler tests with no server.

`InMemoryBus` runs a service's HANDLERS table the way the real consumer does: each event goes
through the envelope (encoded, then decoded and validated as off Kafka), is claimed in an inbox
(a redelivery changes nothing), and its handlers run on the service's fake store in one unit of
work. Whatever the handlers return or emit is recorded, with its lineage, in `emitted`; a failure
rolls the store back, as a failed transaction does, and a message that does not decode is
dead-lettered with its reason in `dead_letters`.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from opentelemetry import context as otel_context

from shared.contract.envelope import Envelope, EnvelopeError, Headers, decode, encode
from shared.contract.events import Event, ModelSpecApplied
from shared.contract.spec import ModelSpec
from shared.runtime.consume import Handler
from shared.runtime.errors import Refused
from shared.runtime.specview import is_news
from shared.runtime.uow import UnitOfWork, caused_by

S = TypeVar("S")


@dataclass
class RecordingTracing:
    """Tracing that makes up trace ids and remembers which traces were started and resumed."""

    started: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)

    def current(self) -> str | None:
        """A traceparent for the handler's span."""
        return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    def start(self, cause: Envelope, name: str) -> tuple[str | None, otel_context.Context | None]:
        """A new trace, recorded by name."""
        self.started.append(name)
        return self.current(), None

    def resume(self, traceparent: str, name: str) -> otel_context.Context | None:
        """A span of an earlier trace, recorded by name."""
        self.resumed.append(name)
        return None


@dataclass
class MemorySpecs:
    """A service's view of the specs, in memory: the twin of `shared.runtime.specview.SpecView`,
    for the in-memory stores to build on."""

    specs: dict[str, ModelSpecApplied] = field(default_factory=dict, kw_only=True)

    async def keep_spec(self, event: ModelSpecApplied) -> bool:
        """Keep the newest revision of a model's spec; False if an older one arrived late."""
        known = self.specs.get(event.model)
        if not is_news(known.revision if known is not None else None, event):
            return False
        self.specs[event.model] = event
        return True

    async def spec_of(self, model: str) -> ModelSpec | None:
        """The spec in force for a model, if any."""
        known = self.specs.get(model)
        return known.spec if known is not None else None

    async def revision_of(self, model: str) -> tuple[int, ModelSpec] | None:
        """(revision, spec) in force for a model, if any."""
        known = self.specs.get(model)
        return (known.revision, known.spec) if known is not None else None


@dataclass(frozen=True)
class DeadLetter:
    """A message the twin refused, and why."""

    kind: str
    reason: str
    value: bytes


@dataclass
class InMemoryBus(Generic[S]):
    """A service's handlers on its fake store: what a consumer group does, without Kafka or a database."""

    handlers: Mapping[type[Event], Sequence[Handler]]
    store: S
    consumer: str = "test"
    batched: frozenset[type[Event]] = frozenset()
    emitted: list[Event] = field(default_factory=list)
    # The ce_id of each emitted event, where its handler fixed it (uow.emit); None where the bus picks one.
    emitted_ids: list[str | None] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (event type, why) of late events
    tracing: RecordingTracing = field(default_factory=RecordingTracing)
    inbox: set[str] = field(default_factory=set)
    source: str = "/tests/producer"

    def envelope(self, event: Event, *, event_id: str | None = None, traceparent: str | None = None) -> Envelope:
        """The event as a consumer would receive it."""
        trace_headers = {"traceparent": traceparent} if traceparent else None
        message = encode(event, source=self.source, event_id=event_id, trace_headers=trace_headers)
        return decode(message.value, message.headers)

    async def handle(self, event: Event, *, event_id: str | None = None, traceparent: str | None = None) -> list[Event]:
        """Deliver one event; returns what its handlers emitted (nothing for a redelivery)."""
        return await self.deliver([self.envelope(event, event_id=event_id, traceparent=traceparent)])

    async def handle_many(self, events: Sequence[Event]) -> list[Event]:
        """Deliver events of one class together, as one poll of a batched consumer."""
        return await self.deliver([self.envelope(event) for event in events])

    async def handle_raw(self, value: bytes, headers: Headers) -> list[Event]:
        """Deliver a message as bytes off the wire; one that does not decode is dead-lettered."""
        allowed = frozenset(cls.event_type for cls in self.handlers)
        try:
            envelope = decode(value, headers, allowed=allowed)
        except EnvelopeError as exc:
            self.dead_letters.append(DeadLetter(exc.kind, exc.reason, value))
            return []
        return await self.deliver([envelope])

    async def deliver(self, envelopes: Sequence[Envelope]) -> list[Event]:
        """Run the handlers of the envelopes' event class in one unit of work."""
        fresh = [e for e in envelopes if e.id not in self.inbox]
        if not fresh:
            return []
        cls = type(fresh[0].event)
        kept = copy.deepcopy(self.store.__dict__)
        apart: list[Callable[[S], Awaitable[None]]] = []

        async def run_apart(work: Callable[[S], Awaitable[None]]) -> None:
            apart.append(work)
            await work(self.store)

        uow: UnitOfWork[S] = UnitOfWork(
            store=self.store,
            envelope=fresh[-1],
            consumer=self.consumer,
            tracing=self.tracing,
            envelopes=tuple(fresh),
            apart_runner=run_apart,
        )
        produced: list[Event] = []
        try:
            if cls in self.batched:
                produced.extend(await self._run(cls, [e.event for e in fresh], uow))
            else:
                for envelope in fresh:
                    uow.envelope = envelope
                    produced.extend(await self._run(cls, envelope.event, uow))
        except Exception as exc:
            # The transaction is rolled back; work done apart stands.
            self.store.__dict__.update(copy.deepcopy(kept))
            for work in apart:
                await work(self.store)
            if not isinstance(exc, Refused):
                raise
            # As on the bus: an event whose claims fail a check is dead-lettered with the reason.
            self.inbox.update(e.id for e in fresh)
            self.dead_letters.append(DeadLetter("refused", str(exc), uow.envelope.event.model_dump_json().encode()))
            return []
        self.inbox.update(e.id for e in fresh)
        self.dropped.extend((fresh[-1].type, reason) for reason in uow.dropped)
        out = [caused_by(event, fresh[-1]) for event in [*(e for e, _ in uow.pending), *produced]]
        self.emitted_ids.extend([*(i for _, i in uow.pending), *(None for _ in produced)])
        self.emitted.extend(out)
        return out

    async def _run(self, cls: type[Event], event: Any, uow: UnitOfWork[S]) -> list[Event]:
        produced: list[Event] = []
        for handler in self.handlers.get(cls, ()):
            result = await handler(event, uow)
            produced.extend([result] if isinstance(result, Event) else (result or []))
        return produced

    def of_type(self, cls: type[Event]) -> list[Any]:
        """The emitted events of one class, in order."""
        return [e for e in self.emitted if isinstance(e, cls)]
