"""Producers without a Kafka client publish over HTTP: `POST /v1/events/data-arrived` and
`POST /v1/events/labels-arrived` take the event's JSON (the contract's model, so a bad field is a
422 naming it), stage it in the registry's outbox in one transaction with its audit entry, and
answer its ce_id. The relay publishes it as if the producer had; the Python client uses these."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry import trace
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import commands, store
from shared.contract.events import DataArrived, LabelsArrived
from shared.runtime.bus import Bus
from shared.runtime.commands import SqlCommands
from shared.runtime.httpapi import Operator, Principal


class Published(BaseModel):
    """An event staged for the bus."""

    event_type: str = Field(description="The event's type.")
    event_id: str = Field(description="Its ce_id.")
    key: str = Field(description="Its Kafka key (the dataset or model).")


def add_publish_routes(api: FastAPI, *, sessions: async_sessionmaker[AsyncSession], bus: Bus) -> None:
    """Add the publish routes."""
    tracer = trace.get_tracer("modelbus.registry.api")
    run: SqlCommands[commands.Store] = SqlCommands(sessions, store.SqlStore, bus)

    async def publish(who: Principal, event: DataArrived | LabelsArrived) -> Published:
        command = commands.Publish(who=commands.Actor.of(who), event=event)
        with tracer.start_as_current_span(
            f"registry publish {event.event_type}", attributes={"modelbus.actor": who.actor}
        ):
            event_id = await run.run(commands.publish, command)
        return Published(event_type=event.event_type, event_id=event_id, key=command.target)

    @api.post("/v1/events/data-arrived", tags=["publish"], status_code=202)
    async def data_arrived(who: Operator, event: DataArrived) -> Published:
        """Publish a DataArrived (a new version of a dataset); audited."""
        return await publish(who, event)

    @api.post("/v1/events/labels-arrived", tags=["publish"], status_code=202)
    async def labels_arrived(who: Operator, event: LabelsArrived) -> Published:
        """Publish a LabelsArrived (ground truth for served predictions); audited."""
        return await publish(who, event)
