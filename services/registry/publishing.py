"""Producers without a Kafka client publish over HTTP: `POST /v1/events/data-arrived` and
`POST /v1/events/labels-arrived` take the event's JSON (the contract's model, so a bad field is a
422 naming it), stage it in the registry's outbox in one transaction with its audit entry, and
answer its ce_id. The relay publishes it as if the producer had; the Python client uses these."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import store
from shared.contract.events import DataArrived, Event, LabelsArrived
from shared.runtime.bus import Bus
from shared.runtime.httpapi import Operator, Principal


class Published(BaseModel):
    """An event staged for the bus."""

    event_type: str = Field(description="The event's type.")
    event_id: str = Field(description="Its ce_id.")
    key: str = Field(description="Its Kafka key (the dataset or model).")


def add_publish_routes(api: FastAPI, *, sessions: async_sessionmaker[AsyncSession], bus: Bus) -> None:
    """Add the publish routes."""
    tracer = trace.get_tracer("modelbus.registry.api")

    async def publish(who: Principal, event: Event, key: str, detail: dict[str, Any]) -> Published:
        with tracer.start_as_current_span(
            f"registry publish {event.event_type}", attributes={"modelbus.actor": who.actor}
        ):
            async with sessions() as session, session.begin():
                event_id = bus.stage(session, event)
                await store.SqlStore(session).audit(
                    actor=who.actor,
                    role=who.role,
                    action=f"publish-{event.event_type}",
                    target=key,
                    reason="",
                    detail={**detail, "event_id": event_id},
                )
        return Published(event_type=event.event_type, event_id=event_id, key=key)

    @api.post("/v1/events/data-arrived", tags=["publish"], status_code=202)
    async def data_arrived(who: Operator, event: DataArrived) -> Published:
        """Publish a DataArrived (a new version of a dataset); audited."""
        return await publish(who, event, event.dataset, {"version": event.version, "uri": event.uri})

    @api.post("/v1/events/labels-arrived", tags=["publish"], status_code=202)
    async def labels_arrived(who: Operator, event: LabelsArrived) -> Published:
        """Publish a LabelsArrived (ground truth for served predictions); audited."""
        return await publish(who, event, event.model, {"labels": len(event.labels)})
