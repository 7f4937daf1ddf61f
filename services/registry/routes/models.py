"""`/v1/models`: models, their history and spec; operators command rollouts, retrains and aliases."""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field

from services.registry import commands, domain
from services.registry.routes import Context, Done, Reason, actor
from shared.contract.events import MAX_VERSION
from shared.runtime.httpapi import Limit, Operator, Viewer


class History(BaseModel):
    """A model's rollout transitions and other lifecycle events."""

    rollouts: list[domain.RolloutStep]
    events: list[domain.HistoryItem]


class RolloutRequest(Reason):
    """A rollout command."""

    version: int | None = Field(default=None, ge=1, le=MAX_VERSION, description="Version (required to start).")


class RetrainRequest(Reason):
    """A retrain request."""

    dataset_version: str | None = Field(default=None, description="Dataset version; latest if absent.")


class AliasRequest(Reason):
    """Point an alias at a version."""

    version: int = Field(ge=1, le=MAX_VERSION, description="Version the alias names.")


def add_routes(api: FastAPI, ctx: Context) -> None:
    """Add the models' routes."""

    @api.get("/v1/models", tags=["read"])
    async def list_models(who: Viewer, q: str | None = None) -> list[domain.ModelSummary]:
        """Every model of the workspaces you may read (optionally those whose name contains `q`), with
        aliases and version counts."""
        async with ctx.sessions() as session:
            return await ctx.queries(session).list_models(name_contains=q, workspaces=who.workspaces())

    @api.get("/v1/models/{name}", tags=["read"])
    async def get_model(_: Viewer, name: str) -> domain.ModelSummary:
        """One model."""
        async with ctx.sessions() as session:
            return await ctx.queries(session).get_model(name)

    @api.get("/v1/models/{name}/history", tags=["read"])
    async def get_history(_: Viewer, name: str, kind: str | None = None, limit: Limit = 200) -> History:
        """Rollout transitions and drift, performance, alert and command events, newest first."""
        async with ctx.sessions() as session:
            rollouts, events = await ctx.queries(session).model_history(name, kind=kind, limit=limit)
        return History(rollouts=rollouts, events=events)

    @api.get("/v1/models/{name}/spec", tags=["read"])
    async def get_spec(_: Viewer, name: str) -> domain.SpecRevision:
        """The spec revision in force."""
        async with ctx.sessions() as session:
            return await ctx.queries(session).latest_spec(name)

    @api.get("/v1/models/{name}/spec/revisions", tags=["read"])
    async def get_spec_revisions(_: Viewer, name: str) -> list[domain.SpecRevision]:
        """Every applied revision, newest first."""
        async with ctx.sessions() as session:
            return await ctx.queries(session).spec_revisions(name)

    @api.post("/v1/models/{name}/rollout/{command}", tags=["act"])
    async def rollout(
        who: Operator,
        name: str,
        command: Literal["start", "promote", "pause", "resume", "rollback"],
        body: RolloutRequest,
    ) -> Done:
        """Command the model's rollout; the deployer carries it out (or refuses it, with a reason)."""
        asked = commands.CommandRollout(
            who=actor(who), reason=body.reason, name=name, command=command, version=body.version
        )
        event_id = await ctx.act(commands.rollout, asked)
        return Done(action=asked.action, target=asked.target, event_id=event_id, detail=asked.detail())

    @api.post("/v1/models/{name}/retrain", tags=["act"])
    async def retrain(who: Operator, name: str, body: RetrainRequest) -> Done:
        """Ask the trainer to train the model again (on the latest dataset version unless one is named)."""
        command = commands.Retrain(who=actor(who), reason=body.reason, name=name, dataset_version=body.dataset_version)
        event_id = await ctx.act(commands.retrain, command)
        return Done(action=command.action, target=command.target, event_id=event_id, detail=command.detail())

    @api.put("/v1/models/{name}/aliases/{alias}", tags=["act"])
    async def put_alias(who: Operator, name: str, alias: str, body: AliasRequest) -> Done:
        """Point an alias of your own at a version (`champion` and `challenger` move with rollouts)."""
        command = commands.SetAlias(who=actor(who), reason=body.reason, name=name, alias=alias, version=body.version)
        await ctx.act(commands.set_alias, command)
        return Done(action=command.action, target=command.target, detail=command.detail())

    @api.delete("/v1/models/{name}/aliases/{alias}", tags=["act"])
    async def delete_alias(who: Operator, name: str, alias: str, reason: str = "") -> Done:
        """Remove an alias of your own."""
        command = commands.DropAlias(who=actor(who), reason=reason, name=name, alias=alias)
        await ctx.act(commands.drop_alias, command)
        return Done(action=command.action, target=command.target)
