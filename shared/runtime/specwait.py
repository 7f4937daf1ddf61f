"""Waiting for a model's spec: one way for every service.

Specs and the events that need them travel on different topics, so an event may overtake its
model's spec. A service then keeps the work the event asks for (parks it: a registration to judge,
an approval to roll out, data to train on) and does it when the spec arrives. What is parked, and
where, is the service's own (its store says, through `Parking`); when and how it is released is
the same everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from shared.contract.events import Event
from shared.contract.spec import ModelSpec

log = logging.getLogger("modelbus.specwait")
W = TypeVar("W")
Act = Callable[[ModelSpec, W], Awaitable[list[Event]]]


class Parking(Protocol[W]):
    """Where a service keeps work that waits for its model's spec."""

    async def spec_of(self, model: str) -> ModelSpec | None:
        """The spec in force for a model, if any."""

    async def park(self, work: W) -> None:
        """Keep work until its model's spec is known."""

    async def unpark(self, model: str) -> list[W]:
        """Take a model's parked work, in the order it is to be done."""


async def with_spec(parking: Parking[W], model: str, work: W, act: Act[W], *, what: str) -> list[Event]:
    """Do the work with its model's spec, or park it until the spec arrives."""
    spec = await parking.spec_of(model)
    if spec is None:
        await parking.park(work)
        log.warning("%s: %s before its spec; it waits for the spec", model, what)
        return []
    return await act(spec, work)


async def release(parking: Parking[W], model: str, spec: ModelSpec, act: Act[W]) -> list[Event]:
    """Do every piece of work parked for a model, now that its spec is here."""
    parked = await parking.unpark(model)
    if parked:
        log.info("%s: its spec arrived; doing %d piece(s) of work that waited for it", model, len(parked))
    produced: list[Event] = []
    for work in parked:
        produced.extend(await act(spec, work))
    return produced
