"""`/v1/datasets`: the dataset versions the registry recorded."""

from __future__ import annotations

from fastapi import FastAPI

from services.registry import domain
from services.registry.routes import Context
from shared.runtime.httpapi import Limit, Viewer


def add_routes(api: FastAPI, ctx: Context) -> None:
    """Add the datasets' routes."""

    @api.get("/v1/datasets", tags=["read"])
    async def list_datasets(_: Viewer, name: str | None = None, limit: Limit = 100) -> list[domain.DatasetVersion]:
        """Dataset versions, newest first."""
        async with ctx.sessions() as session:
            return await ctx.queries(session).list_datasets(name=name, limit=limit)

    @api.get("/v1/datasets/{name}/{version}", tags=["read"])
    async def get_dataset(_: Viewer, name: str, version: str) -> domain.DatasetVersion:
        """One dataset version."""
        async with ctx.sessions() as session:
            return await ctx.queries(session).get_dataset(name, version)
