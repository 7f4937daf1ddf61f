"""The console's frame: templates, static assets (plotly.js from the `plotly` package, gzipped
once), the login and logout, and how a page is rendered for whoever is looking."""

from __future__ import annotations

import gzip
import secrets
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import plotly
from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shared.ops.console import auth, oidc
from shared.ops.console.sources import Sources, Unavailable
from shared.runtime.httpapi import Principal
from shared.runtime.settings import Settings

HERE = Path(__file__).parent
PLOTLY = f"plotly-{plotly.__version__}.min.js"
STATIC = {
    "console.css": (HERE / "static/console.css", "text/css; charset=utf-8"),
    "console.js": (HERE / "static/console.js", "text/javascript; charset=utf-8"),
    PLOTLY: (Path(plotly.__file__).parent / "package_data/plotly.min.js", "text/javascript; charset=utf-8"),
}
ASSET_VERSION = secrets.token_hex(4)  # a new process, new URLs for the console's own files


@cache
def _asset(name: str) -> tuple[bytes, bytes]:
    """An asset's bytes, plain and gzipped (read once per process)."""
    body = STATIC[name][0].read_bytes()
    return body, gzip.compress(body, 6)


def when(value: Any) -> str:
    """A time as the pages show it: 2026-12-04 18:06:36 (UTC), from a datetime or ISO text."""
    if value is None or value == "":
        return ""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text[:19].replace("T", " ")


@dataclass
class Console:
    """What every page needs: settings, the services' APIs, and who holds which session."""

    settings: Settings
    sources: Sources
    sessions: auth.Sessions
    provider: oidc.Provider | None = None  # logging in with the OpenID Connect provider
    throttle: auth.Throttle = field(default_factory=auth.Throttle)
    templates: Environment = field(
        default_factory=lambda: Environment(
            loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True), enable_async=False
        )
    )

    def __post_init__(self) -> None:
        self.templates.filters["when"] = when

    async def who(self, request: Request) -> Principal | None:
        """The session's principal (None: log in first, also when the registry cannot say). A
        provider's access token about to expire is renewed first, if the session can."""
        session = self.sessions.session(request)
        if session is None:
            return None
        if (
            self.provider is not None
            and session.expires_at is not None
            and session.expires_at - time.monotonic() < oidc.RENEW_BEFORE_SECONDS
        ):
            if session.refresh is None:
                return None
            try:
                renewed = await self.provider.renew(session.refresh, "")
            except oidc.LoginFailed:
                return None
            session.token, session.refresh, session.expires_at = (
                renewed.access,
                renewed.refresh or session.refresh,
                renewed.expires_at,
            )
        try:
            return await self.sessions.principal(session.token)
        except Unavailable:
            return None

    def static(self, name: str) -> str:
        return f"{auth.PREFIX}/static/{name}" + ("" if name == PLOTLY else f"?v={ASSET_VERSION}")

    def render(
        self,
        request: Request,
        template: str,
        who: Principal | None,
        *,
        status: int = 200,
        figures: dict[str, Any] | None = None,
        problems: list[str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        session = self.sessions.session(request)
        page = self.templates.get_template(template).render(
            ui=auth.PREFIX,
            who=who,
            csrf=session.csrf if session and who else "",
            static=self.static,
            plotly=PLOTLY,
            charts=bool(figures),
            figures=figures or {},
            problems=problems or [],
            flash=request.query_params.get("done"),
            **context,
        )
        response = HTMLResponse(page, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def login(self, request: Request, *, error: str | None = None, status: int = 401) -> HTMLResponse:
        """The login page: what anyone without a valid session gets, whatever page they asked for."""
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return self.render(
            request,
            "login.html",
            None,
            status=status,
            error=error,
            next=auth.safe_next(request.query_params.get("next") or target),
            provider=self.provider.issuer if self.provider else None,
        )

    def refuse(self, request: Request, who: Principal, status: int, heading: str, message: str) -> HTMLResponse:
        return self.render(request, "error.html", who, status=status, heading=heading, message=message)


def add_frame(api: FastAPI, console: Console) -> None:
    """Static assets, login and logout."""

    @api.get(f"{auth.PREFIX}/static/{{name}}", include_in_schema=False)
    async def static(name: str, request: Request) -> Response:
        if name not in STATIC:
            return Response("no such file", status_code=404, media_type="text/plain")
        plain, packed = _asset(name)
        forever = "public, max-age=31536000, immutable" if name == PLOTLY else "public, max-age=300"
        headers = {"Cache-Control": forever, "Vary": "Accept-Encoding", "X-Content-Type-Options": "nosniff"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(packed, media_type=STATIC[name][1], headers={**headers, "Content-Encoding": "gzip"})
        return Response(plain, media_type=STATIC[name][1], headers=headers)

    @api.get(f"{auth.PREFIX}/login", include_in_schema=False)
    async def login_page(request: Request) -> Response:
        if await console.who(request) is not None:
            return RedirectResponse(auth.safe_next(request.query_params.get("next")), status_code=303)
        return console.login(request, status=200)

    @api.post(f"{auth.PREFIX}/login", include_in_schema=False)
    async def log_in(request: Request, token: Annotated[str, Form()], next: Annotated[str, Form()] = "") -> Response:
        if not auth.same_origin(request):
            return Response("forbidden: a login comes from this console's own page", 403, media_type="text/plain")
        address = request.client.host if request.client else "unknown"
        wait = console.throttle.wait(address)
        if wait > 0:
            error = f"Too many wrong tokens from {address}: try again in {auth.Throttle.retry_after(wait)} s."
            refused = console.login(request, error=error, status=429)
            refused.headers["Retry-After"] = auth.Throttle.retry_after(wait)
            return refused
        try:
            known = await console.sessions.principal(token)
        except Unavailable as exc:
            return console.login(request, error=f"Nobody can say whose token that is now: {exc}", status=503)
        if known is None:
            console.throttle.failed(address)
            return console.login(request, error="That token is not valid.")
        console.throttle.succeeded(address)
        console.sessions.end(request)  # a new id at every login: a fixed session id opens nothing
        response = RedirectResponse(auth.safe_next(next), status_code=303)
        auth.keep_session(response, request, console.sessions.begin(token))
        return response

    @api.get(f"{auth.PREFIX}/login/oidc", include_in_schema=False)
    async def log_in_with_provider(request: Request, next: str = "") -> Response:
        if console.provider is None:
            return console.login(request, error="Single sign-on is not set up here (MODELBUS_OIDC_ISSUER).", status=404)
        try:
            state, url = await console.provider.begin(auth.safe_next(next), oidc.callback_uri(request, auth.PREFIX))
        except oidc.LoginFailed as exc:
            return console.login(request, error=f"Single sign-on is not available now: {exc}", status=503)
        response = RedirectResponse(url, status_code=303)
        response.set_cookie(
            oidc.LOGIN_COOKIE,
            state,
            max_age=oidc.LOGIN_SECONDS,
            path=f"{auth.PREFIX}/login",
            httponly=True,
            samesite="lax",  # the provider's redirect back is a cross-site navigation
            secure=request.url.scheme == "https",
        )
        return response

    @api.get(f"{auth.PREFIX}/login/callback", include_in_schema=False)
    async def provider_answered(
        request: Request, state: str = "", code: str = "", error: str = "", error_description: str = ""
    ) -> Response:
        if console.provider is None:
            return console.login(request, error="Single sign-on is not set up here.", status=404)
        started = request.cookies.get(oidc.LOGIN_COOKIE, "")
        if not state or not started or not secrets.compare_digest(started, state):
            return console.login(request, error="This login was not started in this browser: start again.", status=400)
        if error:
            console.provider.pending.pop(state, None)
            return console.login(request, error=f"The provider refused: {error_description or error}", status=400)
        try:
            tokens, next_page = await console.provider.finish(state, code)
            known = await console.sessions.principal(tokens.access)
        except oidc.LoginFailed as exc:
            return console.login(request, error=f"Single sign-on failed: {exc}", status=400)
        except Unavailable as exc:
            return console.login(request, error=f"Nobody can say who you are now: {exc}", status=503)
        if known is None:
            refused = f"The provider knows you as {tokens.name}, but no role here is granted to you."
            return console.login(request, error=refused, status=403)
        console.sessions.end(request)
        response = RedirectResponse(next_page, status_code=303)
        session = console.sessions.begin(tokens.access, refresh=tokens.refresh, expires_at=tokens.expires_at)
        auth.keep_session(response, request, session)
        response.delete_cookie(oidc.LOGIN_COOKIE, path=f"{auth.PREFIX}/login")
        return response

    @api.post(f"{auth.PREFIX}/logout", include_in_schema=False)
    async def log_out(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
        if not console.sessions.csrf_ok(request, csrf):
            return Response(
                "forbidden: the form's CSRF token is missing or wrong", status_code=403, media_type="text/plain"
            )
        console.sessions.end(request)
        response = RedirectResponse(f"{auth.PREFIX}/login", status_code=303)
        auth.end_session(response)
        return response
