"""`/v1/audit`: who did what, as the registry's commands recorded it."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query

from services.registry import domain
from services.registry.routes import Context
from shared.runtime.httpapi import Limit, Viewer


def add_routes(api: FastAPI, ctx: Context) -> None:
    """Add the audit log's route."""

    @api.get("/v1/audit", tags=["read"])
    async def get_audit(
        who: Viewer,
        target: Annotated[str | None, Query(description="A model (and its versions) or model@version.")] = None,
        actor: str | None = None,
        action: str | None = None,
        limit: Limit = 100,
    ) -> list[domain.AuditEntry]:
        """Who did what, newest first (on the models of the workspaces you may read)."""
        async with ctx.sessions() as session:
            return await ctx.queries(session).audit_log(
                target=target, actor=actor, action=action, limit=limit, workspaces=who.workspaces()
            )
