"""Who is looking at the console: the API's own tokens and roles (the registry says whose a
token is), asked for once on the login page and kept in an HttpOnly, SameSite=Strict cookie
scoped to /ui. Every operator action carries a CSRF token derived from the session's token
(HMAC), which another site can neither read nor make.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlparse

from fastapi import Request, Response

from shared.runtime.httpapi import RANK, Principal

COOKIE = "modelbus_console"
SESSION_SECONDS = 12 * 3600
WHO_SECONDS = 30.0
PREFIX = "/ui"


def token_of(request: Request) -> str | None:
    """The session's token, if the cookie holds one."""
    return request.cookies.get(COOKIE) or None


class Sessions:
    """Who holds a session: the registry says who a token is (`/v1/whoami`), remembered for
    `WHO_SECONDS` so that a page does not ask twice; a token the registry refuses is no session."""

    def __init__(self, whoami: Callable[[str], Awaitable[dict[str, str] | None]]) -> None:
        self.whoami = whoami
        self.known: dict[str, tuple[float, Principal | None]] = {}

    async def principal(self, token: str | None) -> Principal | None:
        if not token:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        kept = self.known.get(key)
        if kept is not None and now - kept[0] < WHO_SECONDS:
            return kept[1]
        found = await self.whoami(token)
        role = (found or {}).get("role")
        principal = Principal(found["actor"], role) if found and role in RANK else None  # type: ignore[arg-type]
        if len(self.known) > 10_000:
            self.known.clear()
        self.known[key] = (now, principal)
        return principal


def csrf_of(token: str) -> str:
    """The CSRF token of a session: an HMAC of a fixed label under the session's own token."""
    return hmac.new(token.encode(), b"modelbus-console-csrf", hashlib.sha256).hexdigest()


def csrf_ok(request: Request, presented: str | None) -> bool:
    """Whether a form's CSRF token is the session's, and the request comes from this origin."""
    token = token_of(request)
    if not token or not presented or not hmac.compare_digest(csrf_of(token), presented):
        return False
    origin = request.headers.get("origin")
    return origin is None or urlparse(origin).netloc == request.headers.get("host", "")


def may(principal: Principal, role: str) -> bool:
    """Whether the principal's role is at least `role`."""
    return RANK[principal.role] >= RANK[role]


def keep_session(response: Response, request: Request, token: str) -> None:
    """Set the session cookie (Secure when the console is reached over HTTPS)."""
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def end_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a console page, never another site."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/"
