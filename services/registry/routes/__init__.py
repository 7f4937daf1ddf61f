"""The registry's HTTP routes, one module per resource (models, versions, datasets, audit,
specs); `Context` is what they share. Routes only parse, authorize and translate: reads go to the
store's queries, actions become commands (services.registry.commands) run through the unit of
work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import HTTPException, Path
from opentelemetry import trace
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import commands, store
from services.registry.cache import AliasCache
from shared.contract.events import MAX_VERSION
from shared.contract.refs import Ref, parse_ref
from shared.runtime.commands import SqlCommands
from shared.runtime.httpapi import Principal
from shared.runtime.settings import Settings

VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION, description="A version number.")]
T = TypeVar("T")
C = TypeVar("C", bound=commands.Command)


class Reason(BaseModel):
    """Why an operator acts; kept in the audit log."""

    reason: str = Field(default="", max_length=2000, description="Why.")


class Done(BaseModel):
    """Result of an action."""

    action: str
    target: str
    event_id: str | None = Field(default=None, description="ce_id of the event emitted, if any.")
    detail: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Context:
    """What every router of the registry needs."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    cache: AliasCache
    commands: SqlCommands[commands.Store]
    tracer: trace.Tracer

    async def act(self, handler: Callable[[C, Any], Awaitable[T]], command: C) -> T:
        """Carry out an operator's command (audited by its handler), in a span naming who and what;
        the model's cached answers are dropped when it may have changed them."""
        with self.tracer.start_as_current_span(
            f"registry {command.action}",
            attributes={"modelbus.actor": command.who.actor, "modelbus.target": command.target},
        ):
            result = await self.commands.run(handler, command)
        if command.model is not None:
            self.cache.invalidate(command.model)
        return result

    def queries(self, session: AsyncSession) -> store.SqlStore:
        return store.SqlStore(session)


def actor(who: Principal) -> commands.Actor:
    """The command's actor: the token's name and role."""
    return commands.Actor.of(who)


def ref_of(name: str, ref: str) -> Ref:
    """`name@ref` parsed; 400 naming what is wrong otherwise."""
    try:
        return parse_ref(f"{name}@{ref}")
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
