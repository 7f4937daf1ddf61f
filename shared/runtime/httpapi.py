"""What every modelbus HTTP API shares: bearer tokens with roles, and request metrics."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, NamedTuple

import httpx
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.runtime import oidc
from shared.runtime.accounts import PREFIX, Accounts
from shared.runtime.bus import Bus
from shared.runtime.settings import Role, Settings

RANK = oidc.RANK


# ---------------------------------------------------------------- who is asking


class Principal(NamedTuple):
    """The caller behind a bearer token: the name audited, the strongest role they have anywhere,
    for a provider's token its subject (the provider's stable id of the person or client), and their
    role per workspace (`grants`, (workspace, role) pairs; `*` is every workspace; none: `role` in
    every workspace)."""

    actor: str
    role: Role
    subject: str = ""
    grants: tuple[tuple[str, Role], ...] = ()

    def role_in(self, workspace: str) -> Role | None:
        """The strongest role in a workspace, None if none."""
        if not self.grants:
            return self.role
        found: list[Role] = [role for where, role in self.grants if where in (workspace, oidc.ALL)]
        if not found:
            return None
        return max(found, key=RANK.__getitem__)

    def may(self, workspace: str, role: Role) -> bool:
        """Whether the caller has at least `role` in `workspace`."""
        held = self.role_in(workspace)
        return held is not None and RANK[held] >= RANK[role]

    def workspaces(self, role: Role = "viewer") -> frozenset[str] | None:
        """The workspaces where the caller has at least `role` (None: every one)."""
        if not self.grants:
            return None if RANK[self.role] >= RANK[role] else frozenset()
        held = [(where, r) for where, r in self.grants if RANK[r] >= RANK[role]]
        if any(where == oidc.ALL for where, _ in held):
            return None
        return frozenset(where for where, _ in held)


def granted(actor: str, grants: tuple[tuple[str, Role], ...], subject: str = "") -> Principal:
    """A principal from its grants: its `role` the strongest of them."""
    return Principal(actor, max((r for _, r in grants), key=RANK.__getitem__), subject, grants)


_bearer = HTTPBearer(
    auto_error=False, description="A token from MODELBUS_API_TOKENS, or the OpenID Connect provider's access token."
)


WorkspaceOf = Callable[[str], Awaitable[str]]  # a model's workspace
Refused = Callable[["Principal", Request, str, str], Awaitable[None]]  # audit a refusal: who, request, model, why


class RoleCheck:
    """A FastAPI dependency admitting callers with at least `role` (401 without a valid token, 403 if
    weaker). On a route of one model (a `name` path parameter) of an API that knows the models'
    workspaces (`app.state.workspace_of`), the role must be held in that model's workspace; a
    caller with no role there at all (reaching into another team's model) is told to
    `app.state.refused` as well as refused (the registry audits it)."""

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(
        self, request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        if credentials is None:
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        try:
            principal: Principal | None = await request.app.state.identify(credentials.credentials)
        except oidc.Invalid as exc:
            challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            raise HTTPException(401, f"the bearer token is not valid: {exc}", headers=challenge) from exc
        except oidc.Unassigned as exc:
            raise HTTPException(403, str(exc)) from exc
        except oidc.Unavailable as exc:
            raise HTTPException(503, f"the bearer token cannot be checked now: {exc}") from exc
        if principal is None:
            raise HTTPException(401, "the bearer token is not valid", headers={"WWW-Authenticate": "Bearer"})
        model = request.path_params.get("name")
        workspace_of: WorkspaceOf | None = getattr(request.app.state, "workspace_of", None)
        if model is None or workspace_of is None:
            if RANK[principal.role] < RANK[self.role]:
                raise HTTPException(403, f"role {principal.role} may not do this; it needs {self.role}")
        else:
            workspace = await workspace_of(model)
            if not principal.may(workspace, self.role):
                held = principal.role_in(workspace)
                reason = (
                    f"{principal.actor} has no role in workspace {workspace!r} (model {model})"
                    if held is None
                    else f"role {held} in workspace {workspace!r} may not do this; it needs {self.role}"
                )
                refused: Refused | None = getattr(request.app.state, "refused", None)
                if refused is not None and held is None:  # reaching into another workspace's model
                    await refused(principal, request, model, reason)
                raise HTTPException(403, reason)
        return principal


class Identify:
    """Token -> principal: one of MODELBUS_API_TOKENS (compared with every one in constant time,
    whichever matches), else a service account's (shared.runtime.accounts), else, when an OpenID
    Connect issuer is set, the provider's access token (raising oidc.Invalid, oidc.Unassigned or
    oidc.Unavailable with the reason)."""

    def __init__(
        self, settings: Settings, *, http: httpx.AsyncClient | None = None, accounts: Accounts | None = None
    ) -> None:
        self.accounts = accounts
        principals = settings.static_grants().items() if settings.static_tokens else []
        self.known = [
            (token.encode(), granted(actor, ((workspace, role),))) for token, (role, actor, workspace) in principals
        ]
        self.verifier = (
            oidc.Verifier(
                settings.oidc_issuer,
                settings.oidc_audience,
                oidc.grants(settings.oidc_roles),
                groups_claim=settings.oidc_groups_claim,
                http=http,
            )
            if settings.oidc_issuer
            else None
        )

    async def __call__(self, presented: str) -> Principal | None:
        candidate = presented.encode()
        found = None
        for token, principal in self.known:
            if hmac.compare_digest(token, candidate):
                found = principal
        if found is None and self.accounts is not None and presented.startswith(PREFIX):
            account = await self.accounts.of(presented)
            if account is not None:
                found = granted(account.name, ((account.workspace, account.role),), f"service-account:{account.id}")
        if found is None and self.verifier is not None and presented.count(".") == 2:
            claims = await self.verifier.claims(presented)
            found = granted(claims.name, claims.grants, claims.subject)
        return found


def identifier(settings: Settings, sessions: async_sessionmaker[AsyncSession] | None = None) -> Identify:
    """How the APIs tell who presents a bearer token (see Identify); with `sessions`, service
    accounts' tokens too."""
    return Identify(settings, accounts=Accounts(sessions) if sessions is not None else None)


Limit = Annotated[int, Query(ge=1, le=1000)]
Viewer = Annotated[Principal, Depends(RoleCheck("viewer"))]
Operator = Annotated[Principal, Depends(RoleCheck("operator"))]
Admin = Annotated[Principal, Depends(RoleCheck("admin"))]


# ---------------------------------------------------------------- errors


def add_error_handlers(api: FastAPI) -> None:
    """A value PostgreSQL cannot take (a NUL in a string, an integer beyond its column's range:
    SQLSTATE class 22) is the caller's mistake: 422 naming it, not a server error."""

    @api.exception_handler(DBAPIError)
    async def _data_error(_: Request, exc: DBAPIError) -> JSONResponse:
        code = str(getattr(exc.orig, "sqlstate", "") or "")
        if not code.startswith("22"):
            raise exc
        first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else code
        detail = f"a value in the request cannot be stored or compared: {first.split(': ', 1)[-1][:300]}"
        return JSONResponse({"detail": detail}, status_code=422)


# ---------------------------------------------------------------- request size


class BodyTooLarge(Exception):
    """A request body over the limit (raised from the body stream)."""


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, by Content-Length or while streaming.

    Paths ending in one of `uploads`' suffixes (model imports) may stream up to its limit; their
    routes check a declared Content-Length themselves, so that the refusal is audited."""

    def __init__(self, app: ASGIApp, limit: int, uploads: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.uploads = uploads or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit():
            await self._refuse(send, "bad Content-Length")
            return
        path: str = scope.get("path", "")
        limit = next((n for suffix, n in self.uploads.items() if path.endswith(suffix)), None)
        if limit is None and int(declared) > self.limit:
            await self._refuse(send, f"request body over {self.limit} bytes")
            return
        limit = limit or self.limit
        seen, started = 0, False

        async def receiving() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, f"request body over {limit} bytes")

    @staticmethod
    async def _refuse(send: Send, detail: str) -> None:
        body = JSONResponse({"detail": detail}).body
        status = 400 if detail == "bad Content-Length" else 413
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- metrics


class HttpMetrics:
    """Requests, errors and latency per route, as an ASGI middleware."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "modelbus_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "modelbus_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - started)


def add_health_routes(
    api: FastAPI, sessions: async_sessionmaker[AsyncSession], bus: Bus, metrics: CollectorRegistry
) -> None:
    """`/healthz` (the process is up), `/readyz` (the database answers, the bus runs), `/metrics`."""

    @api.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Ready when the database answers and the bus is running."""
        problems = []
        try:
            async with sessions() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:
            problems.append(f"database: {type(exc).__name__}")
        if not bus.running:
            problems.append("bus: not started")
        return JSONResponse({"ready": not problems, "problems": problems}, status_code=503 if problems else 200)

    @api.get("/metrics", tags=["health"])
    async def metrics_endpoint() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)
