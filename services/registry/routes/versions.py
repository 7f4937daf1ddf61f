"""`/v1/versions` and a model's versions: search, one version by number or alias (cached),
lineage; operators approve, reject and tag versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel, Field

from services.registry import commands, domain
from services.registry.routes import Context, Done, Reason, VersionPath, actor, ref_of
from shared.runtime.httpapi import Operator, Viewer


class VersionQuery(BaseModel):
    """Filters of a version search (query parameters)."""

    status: domain.Status | None = Field(default=None, description="Only versions with this status.")
    alias: str | None = Field(default=None, description="Only the version this alias names.")
    tag: str | None = Field(default=None, description="KEY or KEY=VALUE.")
    metric: str | None = Field(default=None, description="e.g. accuracy>=0.8")
    limit: int = Field(default=100, ge=1, le=1000, description="Most versions returned.")
    offset: int = Field(default=0, ge=0, description="Versions skipped (newest first).")


class TagRequest(Reason):
    """Set a tag."""

    value: str = Field(max_length=1000, description="Tag value.")


def add_routes(api: FastAPI, ctx: Context) -> None:
    """Add the versions' routes."""

    async def search(
        model: str | None, query: VersionQuery, workspaces: frozenset[str] | None = None
    ) -> list[domain.ModelVersion]:
        try:
            metric_filter = domain.parse_metric_filter(query.metric) if query.metric else None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        tag_filter = None
        if query.tag:
            key, sep, value = query.tag.partition("=")
            tag_filter = (key, value if sep else None)
        async with ctx.sessions() as session:
            return await ctx.queries(session).list_versions(
                model=model,
                status=query.status,
                alias=query.alias,
                tag=tag_filter,
                metric=metric_filter,
                limit=query.limit,
                offset=query.offset,
                workspaces=workspaces,
            )

    @api.get("/v1/versions", tags=["read"])
    async def search_versions(
        who: Viewer, query: Annotated[VersionQuery, Query()], model: str | None = None
    ) -> list[domain.ModelVersion]:
        """Search versions across models (those of the workspaces you may read) by alias, status, tag and metric."""
        return await search(model, query, who.workspaces())

    @api.get("/v1/models/{name}/versions", tags=["read"])
    async def list_versions(_: Viewer, name: str, query: Annotated[VersionQuery, Query()]) -> list[domain.ModelVersion]:
        """A model's versions, newest first, filtered."""
        return await search(name, query)

    @api.get("/v1/models/{name}/versions/{ref}", tags=["read"], response_model=domain.ModelVersion)
    async def get_version(_: Viewer, name: str, ref: str) -> Response:
        """A version by number or alias (`NAME@3`, `NAME@champion`)."""
        answer = ctx.cache.get(name, ref)
        if answer is None:
            parsed = ref_of(name, ref)
            generation = ctx.cache.generation(name)
            async with ctx.sessions() as session:
                queries = ctx.queries(session)
                found = await queries.get_version(name, await queries.resolve(parsed))
            answer = found.model_dump_json().encode()
            ctx.cache.put(name, ref, generation, answer)
        return Response(answer, media_type="application/json")

    @api.get("/v1/models/{name}/versions/{ref}/lineage", tags=["read"])
    async def get_lineage(_: Viewer, name: str, ref: str) -> domain.Lineage:
        """Dataset version → training run → version → evaluations → rollouts → drift and alerts."""
        async with ctx.sessions() as session:
            queries = ctx.queries(session)
            return await queries.lineage(name, await queries.resolve(ref_of(name, ref)))

    @api.post("/v1/models/{name}/versions/{version}/approve", tags=["act"])
    async def approve(who: Operator, name: str, version: VersionPath, body: Reason) -> Done:
        """Approve a version held for review; the deployer starts its rollout."""
        command = commands.Approve(who=actor(who), reason=body.reason, name=name, version=version)
        event_id = await ctx.act(commands.approve, command)
        return Done(action=command.action, target=command.target, event_id=event_id)

    @api.post("/v1/models/{name}/versions/{version}/reject", tags=["act"])
    async def reject(who: Operator, name: str, version: VersionPath, body: Reason) -> Done:
        """Reject a version that is not serving."""
        command = commands.Reject(who=actor(who), reason=body.reason, name=name, version=version)
        await ctx.act(commands.reject, command)
        return Done(action=command.action, target=command.target)

    @api.put("/v1/models/{name}/versions/{version}/tags/{key}", tags=["act"])
    async def put_tag(who: Operator, name: str, version: VersionPath, key: str, body: TagRequest) -> Done:
        """Set a tag on a version."""
        command = commands.SetTag(
            who=actor(who), reason=body.reason, name=name, version=version, key=key, value=body.value
        )
        await ctx.act(commands.set_tag, command)
        return Done(action=command.action, target=command.target, detail=command.detail())

    @api.delete("/v1/models/{name}/versions/{version}/tags/{key}", tags=["act"])
    async def delete_tag(who: Operator, name: str, version: VersionPath, key: str, reason: str = "") -> Done:
        """Remove a tag from a version."""
        command = commands.DropTag(who=actor(who), reason=reason, name=name, version=version, key=key)
        await ctx.act(commands.drop_tag, command)
        return Done(action=command.action, target=command.target, detail=command.detail())
