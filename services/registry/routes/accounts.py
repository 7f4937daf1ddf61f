"""`/v1/service-accounts`: an admin of a workspace makes a long-lived token for automation with one
role in that workspace (shown once, in the answer), lists the workspace's accounts and revokes
one; each is audited. See shared.runtime.accounts for how a token is kept and checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry import store
from services.registry.routes import Context
from shared.contract.spec import NAME_PATTERN
from shared.runtime import accounts
from shared.runtime.httpapi import Principal, Viewer
from shared.runtime.settings import Role


class NewAccount(BaseModel):
    """A service account to make."""

    name: str = Field(pattern=NAME_PATTERN, description="What it is for, e.g. ci-fraud-import (audited as its actor).")
    workspace: str = Field(
        pattern=NAME_PATTERN.replace("^", "^(\\*|", 1).replace("$", ")$"),
        description="The workspace it acts in (`*`: every one, for an admin of all).",
    )
    role: Role = Field(description="Its role there: viewer, operator or admin.")
    expires_in_days: int | None = Field(default=None, ge=1, le=3650, description="Unset: until revoked.")
    reason: str = Field(default="", max_length=2000, description="Why.")


def _admin_of(who: Principal, workspace: str) -> None:
    if not who.may(workspace, "admin"):
        raise HTTPException(403, f"{who.actor} is not an admin of workspace {workspace!r}")


async def _audit(
    session: AsyncSession, who: Principal, action: str, account_id: str, reason: str, detail: dict[str, Any]
) -> None:
    await store.SqlStore(session).audit(
        actor=who.actor,
        subject=who.subject,
        role=who.role,
        action=action,
        target=f"service-account:{account_id}",
        reason=reason,
        detail=detail,
    )


def add_routes(api: FastAPI, ctx: Context) -> None:
    """Add the service accounts' routes."""

    @api.post("/v1/service-accounts", tags=["admin"], status_code=201)
    async def create_account(who: Viewer, body: NewAccount) -> dict[str, Any]:
        """Make a service account (admin of its workspace); the answer holds its token, shown this once."""
        _admin_of(who, body.workspace)
        expires = datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
        async with ctx.sessions() as session, session.begin():
            account, token = await accounts.create(
                session, name=body.name, workspace=body.workspace, role=body.role, by=who.actor, expires_at=expires
            )
            detail = {"name": body.name, "workspace": body.workspace, "role": body.role}
            await _audit(session, who, "create-service-account", account.id, body.reason, detail)
        return {**account.as_dict(), "token": token}

    @api.get("/v1/service-accounts", tags=["admin"])
    async def list_accounts(who: Viewer) -> list[dict[str, Any]]:
        """The service accounts of the workspaces you administer (never their tokens), newest first."""
        administered = who.workspaces("admin")
        if administered is not None and not administered:
            raise HTTPException(403, f"{who.actor} is not an admin of any workspace")
        async with ctx.sessions() as session:
            return [a.as_dict() for a in await accounts.listed(session, administered)]

    @api.delete("/v1/service-accounts/{account_id}", tags=["admin"])
    async def revoke_account(who: Viewer, account_id: str, reason: str = "") -> dict[str, Any]:
        """Revoke a service account now (admin of its workspace): its token opens nothing any more."""
        async with ctx.sessions() as session, session.begin():
            existing = await accounts.found(session, account_id)
            if existing is None:
                raise HTTPException(404, f"no service account has the id {account_id!r}")
            _admin_of(who, existing.workspace)
            revoked = await accounts.revoke(session, account_id, by=who.actor)
            assert revoked is not None
            detail = {"name": existing.name, "workspace": existing.workspace}
            await _audit(session, who, "revoke-service-account", account_id, reason, detail)
        return revoked.as_dict()
