"""Operator actions take the road events take (cosmicpython's `messagebus.handle(cmd)`): an HTTP
route parses, authorizes and builds a command; a command handler `async def x(command, uow) ->
result` does the work in one unit of work, and what it emits is staged in the outbox in the same
transaction. `SqlCommands` runs it on PostgreSQL, `MemoryCommands` on the service's in-memory twin,
so a rule an operator action obeys is unit-tested like any event handler."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.contract.events import Event

S = TypeVar("S")
C = TypeVar("C")
T = TypeVar("T")


@dataclass
class CommandWork(Generic[S]):
    """One command's work: the store in its transaction, and what it emits."""

    store: S
    apart_runner: Callable[[Callable[[S], Awaitable[None]]], Awaitable[None]]
    pending: list[tuple[Event, str]] = field(default_factory=list)

    def emit(self, event: Event) -> str:
        """Publish `event` when (and only if) the command's transaction commits; returns its ce_id."""
        event_id = str(uuid.uuid4())
        self.pending.append((event, event_id))
        return event_id

    async def apart(self, work: Callable[[S], Awaitable[None]]) -> None:
        """Do `work` in a transaction of its own, which stands when the command's is rolled back
        (the audit entry of a refused action)."""
        await self.apart_runner(work)


CommandHandler = Callable[[C, CommandWork[S]], Awaitable[T]]


class Stager(Protocol):
    """What the bus offers a command: the outbox, and a nudge for its relay."""

    def stage(self, session: AsyncSession, event: Event, *, event_id: str | None = None) -> str: ...

    def wake_relay(self) -> None: ...


class Commands(Protocol[S]):
    """Runs command handlers of one service, on PostgreSQL or in memory."""

    async def run(self, handler: CommandHandler[C, S, T], command: C) -> T: ...


@dataclass
class SqlCommands(Generic[S]):
    """Command handlers on PostgreSQL: one transaction per command, its events in the outbox."""

    sessions: async_sessionmaker[AsyncSession]
    store: Callable[[AsyncSession], S]
    bus: Stager | None  # None: the commands it runs emit nothing

    async def run(self, handler: CommandHandler[C, S, T], command: C) -> T:
        async def apart(work: Callable[[S], Awaitable[None]]) -> None:
            async with self.sessions() as session, session.begin():
                await work(self.store(session))

        async with self.sessions() as session, session.begin():
            uow = CommandWork(store=self.store(session), apart_runner=apart)
            result = await handler(command, uow)
            if uow.pending and self.bus is None:
                raise RuntimeError(
                    f"{getattr(handler, '__name__', handler)} emitted events, and these commands have no bus"
                )
            for event, event_id in uow.pending:
                assert self.bus is not None
                self.bus.stage(session, event, event_id=event_id)
        if uow.pending and self.bus is not None:
            self.bus.wake_relay()
        return result


@dataclass
class MemoryCommands(Generic[S]):
    """Command handlers on a service's in-memory twin: a failed command leaves the store as it was
    (but for its work apart), as a rolled-back transaction does; what commits is in `emitted`."""

    store: S
    emitted: list[Event] = field(default_factory=list)

    async def run(self, handler: CommandHandler[C, S, T], command: C) -> T:
        kept: dict[str, Any] = copy.deepcopy(self.store.__dict__)
        apart: list[Callable[[S], Awaitable[None]]] = []

        async def run_apart(work: Callable[[S], Awaitable[None]]) -> None:
            apart.append(work)
            await work(self.store)

        uow = CommandWork(store=self.store, apart_runner=run_apart)
        try:
            result = await handler(command, uow)
        except Exception:
            self.store.__dict__.update(copy.deepcopy(kept))
            for work in apart:
                await work(self.store)
            raise
        self.emitted.extend(event for event, _ in uow.pending)
        return result
