"""The root `modelbus` command and what every command group shares: settings, API calls,
version references."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shared.ops.cli.render import err
from shared.runtime.settings import Settings, get_settings

app = typer.Typer(help="modelbus: a model's whole life as durable, traced Kafka events.", no_args_is_help=True)


def cli_settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def call_api(
    method: str,
    path: str,
    *,
    json: object = None,
    params: dict[str, object] | None = None,
    service: str = "registry",
    files: dict[str, Any] | None = None,
    data: dict[str, str] | None = None,
    timeout: float | None = None,
    raw: bool = False,
) -> Any:
    """Call an API; on refusal print its reason and exit (2 for the caller's mistake, 1 otherwise).
    `raw`: the httpx response rather than its JSON."""
    from shared.ops.client import ApiError, RegistryClient

    try:
        with RegistryClient(cli_settings(), service=service) as client:
            response = client.send(method, path, json=json, params=params, files=files, data=data, timeout=timeout)
            return response if raw else response.json()
    except ApiError as exc:
        err.print(str(exc), markup=False)
        for issue in exc.errors:
            line = f" (line {issue['line']})" if issue.get("line") else ""
            err.print(f"  - {issue['path']}{line}: {issue['message']}", markup=False)
        raise typer.Exit(2 if exc.status and 400 <= exc.status < 500 else 1) from None


def ref_or_exit(text: str) -> Any:
    from shared.contract.refs import parse_ref

    try:
        return parse_ref(text)
    except ValueError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None


Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit log).")]
