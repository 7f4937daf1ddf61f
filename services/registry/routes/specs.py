"""`/v1/specs`: an admin applies a model spec; a changed one is a new revision, published."""

from __future__ import annotations

import contextlib

import yaml
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from services.registry import commands
from services.registry.routes import Context, actor
from shared.runtime.httpapi import Admin
from shared.runtime.specfile import load_spec_checked


class SpecRequest(BaseModel):
    """A spec to apply, as YAML text."""

    spec_yaml: str = Field(max_length=1_000_000, description="The spec, as YAML (or JSON).")
    reason: str = Field(default="", max_length=2000, description="Why.")


class Applied(BaseModel):
    """Result of applying a spec."""

    model: str
    revision: int
    sha256: str
    changed: bool = Field(description="False when the spec equals the revision in force (nothing published).")


def spec_target(spec_yaml: str) -> str:
    """The audit target of a spec, even one too broken to validate."""
    with contextlib.suppress(Exception):
        data = yaml.safe_load(spec_yaml)
        name = data.get("model") if isinstance(data, dict) else None
        if isinstance(name, str):
            return name[:128]
    return "(unnamed spec)"


def add_routes(api: FastAPI, ctx: Context) -> None:
    """Add the specs' route."""

    @api.post("/v1/specs", tags=["admin"])
    async def apply_spec(who: Admin, body: SpecRequest, request: Request) -> Applied:
        """Validate and apply a model spec; a changed spec becomes a new revision and is published."""
        command = commands.ApplySpec(
            who=actor(who),
            reason=body.reason,
            spec_yaml=body.spec_yaml,
            named=spec_target(body.spec_yaml),
            check=lambda text: load_spec_checked(text, ctx.settings.feast_repo),
        )
        applied = await ctx.act(commands.apply_spec, command)
        request.app.state.workspaces.forget(applied.model)  # it may have moved to another workspace
        return Applied(model=applied.model, revision=applied.revision, sha256=applied.sha256, changed=applied.changed)
