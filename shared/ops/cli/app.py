"""The root `modelbus` command and what every command group shares: settings, API calls,
version references."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shared.contract.topics import Principal
from shared.ops.cli.render import err
from shared.runtime.settings import Settings, get_settings

app = typer.Typer(help="modelbus: a model's whole life as durable, traced Kafka events.", no_args_is_help=True)


def cli_settings(principal: Principal = "producer") -> Settings:
    """The settings, from the environment; on the local stack, unless the environment names Kafka
    credentials, a command uses the bus as `principal`: an outside producer by default (every
    change of state goes through the audited APIs), the admin for the stack, topics and tail."""
    from shared.ops import credentials

    try:
        credentials.adopt(principal)
        return get_settings()
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def client() -> Any:
    """The Python client (`modelbus.Client`) with the settings' URLs and token: every command's
    calls go through it, so the CLI and the client cannot differ."""
    from modelbus import Client

    settings = cli_settings()
    return Client(
        settings.api_url,
        token=settings.api_token.get_secret_value() or local_token(settings),
        alerter_url=settings.alerter_url,
        serving_url=f"http://{settings.serving_host}:{settings.serving_port}",
    )


def local_token(settings: Settings) -> str:
    """The local platform's admin token (`.modelbus/console-token`, made by `modelbus demo` and
    `modelbus up` when MODELBUS_API_TOKENS is unset), for a CLI with no MODELBUS_API_TOKEN on the
    machine that runs the local stack; empty elsewhere."""
    kept = settings.stack_dir / "console-token"
    if settings.api_tokens.get_secret_value() or not kept.is_file():
        return ""
    return kept.read_text().strip()


def refused(exc: Any) -> typer.Exit:
    """Print an API's refusal (with its field errors) and the exit to raise: 2 for the caller's
    mistake, 1 otherwise."""
    err.print(str(exc), markup=False)
    for issue in exc.errors:
        if isinstance(issue, dict) and "path" in issue:
            line = f" (line {issue['line']})" if issue.get("line") else ""
            err.print(f"  - {issue['path']}{line}: {issue['message']}", markup=False)
    return typer.Exit(2 if exc.status and 400 <= exc.status < 500 else 1)


def run(call: Any, *args: Any, **kwargs: Any) -> Any:
    """`call(client, *args, **kwargs)` with the CLI's client; a refusal is printed and exits."""
    from modelbus import ApiError

    try:
        with client() as mb:
            return call(mb, *args, **kwargs)
    except ApiError as exc:
        raise refused(exc) from None


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
    """Call an API through the client; on refusal print its reason and exit.
    `raw`: the httpx response rather than its JSON."""
    query = {k: v for k, v in (params or {}).items() if v is not None}
    options: dict[str, Any] = {"json": json, "params": query, "files": files, "data": data}
    if timeout is not None:
        options["timeout"] = timeout
    response = run(lambda mb: mb.request(service, method, path, **options))
    return response if raw else response.json()


def ref_or_exit(text: str) -> Any:
    from shared.contract.refs import parse_ref

    try:
        return parse_ref(text)
    except ValueError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None


def version_or_exit(text: str, command: str) -> Any:
    """`NAME@VERSION` or `NAME@ALIAS` parsed; a bare name (or a bad reference) exits 2 naming
    what `command` needs."""
    parsed = ref_or_exit(text)
    if parsed.version is None and parsed.alias is None:
        err.print(f"{command} needs NAME@VERSION or NAME@ALIAS", markup=False)
        raise typer.Exit(2)
    return parsed


Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit log).")]
