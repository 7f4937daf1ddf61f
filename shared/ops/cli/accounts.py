"""`modelbus service-accounts`: tokens for automation, one role in one workspace (the registry's API)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from shared.ops.cli.app import Reason, app, call_api
from shared.ops.cli.render import say, table

accounts_app = typer.Typer(
    help="Service accounts: long-lived tokens for automation, one role in one workspace (admin of it).",
    no_args_is_help=True,
)
app.add_typer(accounts_app, name="service-accounts")


@accounts_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="What it is for, e.g. ci-fraud-import (its name in the audit log).")],
    workspace: Annotated[str, typer.Option(help="The workspace it acts in (* : every one).")],
    role: Annotated[Literal["viewer", "operator", "admin"], typer.Option(help="Its role there.")] = "operator",
    expires_in_days: Annotated[int | None, typer.Option(help="Unset: until revoked.")] = None,
    reason: Reason = "",
) -> None:
    """Make a service account; its token is printed this once (keep it in your CI's secrets)."""
    body = {"name": name, "workspace": workspace, "role": role, "expires_in_days": expires_in_days, "reason": reason}
    made = call_api("POST", "/v1/service-accounts", json=body)
    say(f"service account {made['name']} ({made['id']}): {made['role']} in workspace {made['workspace']}")
    say(f"token (shown once): {made['token']}")


@accounts_app.command("ls")
def listed() -> None:
    """The service accounts of the workspaces you administer, newest first."""
    found = call_api("GET", "/v1/service-accounts")
    table(
        ["ID", "NAME", "WORKSPACE", "ROLE", "CREATED BY", "CREATED", "EXPIRES", "REVOKED"],
        [
            [a["id"], a["name"], a["workspace"], a["role"], a["created_by"], a["created_at"][:19],
             (a["expires_at"] or "-")[:19], (a["revoked_at"] or "-")[:19]]
            for a in found
        ],
    )  # fmt: skip


@accounts_app.command("revoke")
def revoke(account_id: Annotated[str, typer.Argument(help="The account's id.")], reason: Reason = "") -> None:
    """Revoke a service account now: its token opens nothing any more (within 5 s everywhere)."""
    done = call_api("DELETE", f"/v1/service-accounts/{account_id}", params={"reason": reason})
    say(f"service account {done['name']} revoked by {done['revoked_by']} at {done['revoked_at'][:19]}")
