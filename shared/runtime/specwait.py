"""Waiting for a model's spec: one way for every service.

Specs and the events that need them travel on different topics, so an event may overtake its
model's spec. A service then keeps the event (parks it) and handles it when the spec arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from shared.contract.events import Event
from shared.contract.spec import ModelSpec

log = logging.getLogger("modelbus.specwait")
E = TypeVar("E", bound=Event)
Act = Callable[[ModelSpec, E], Awaitable[list[Event]]]


class Parking(Protocol[E]):
    """What a store offers for events that wait for their spec."""

    async def spec_of(self, model: str) -> ModelSpec | None:
        """The spec in force for a model, if any."""

    async def park(self, event: E) -> None:
        """Keep an event until its model's spec is known."""

    async def unpark(self, model: str) -> list[E]:
        """Take a model's parked events, in the order they are to be handled."""


async def with_spec(store: Parking[E], model: str, event: E, act: Act[E], *, service: str) -> list[Event]:
    """Act on the event with its model's spec, or park it until the spec arrives."""
    spec = await store.spec_of(model)
    if spec is None:
        await store.park(event)
        log.warning("%s: %s for %s before its spec; parked until it arrives", service, event.event_type, model)
        return []
    return await act(spec, event)


async def release(store: Parking[E], model: str, spec: ModelSpec, act: Act[E], *, service: str) -> list[Event]:
    """Act on every event parked for a model, now that its spec is here."""
    parked = await store.unpark(model)
    if parked:
        log.info("%s: the spec of %s arrived; handling %d parked event(s)", service, model, len(parked))
    produced: list[Event] = []
    for event in parked:
        produced.extend(await act(spec, event))
    return produced
