"""Who is looking at the console: the API's own tokens and roles (the registry says whose a
token is), asked for once on the login page and kept in the console's memory. The browser holds
only a session id (random, 256 bits) in an HttpOnly, SameSite=Strict cookie scoped to /ui: never
the token. A session ends at logout, after `IDLE_SECONDS` unused or `SESSION_SECONDS` in all, and
when the console restarts. Every operator action carries the session's own random CSRF token,
which another site can neither read nor make; the login form is taken from this origin only, and
failed logins from one address are slowed down (`Throttle`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from fastapi import Request, Response

from shared.runtime.httpapi import RANK, Principal

COOKIE = "modelbus_console"
SESSION_SECONDS = 12 * 3600
IDLE_SECONDS = 2 * 3600
MOST_SESSIONS = 10_000
WHO_SECONDS = 30.0
PREFIX = "/ui"


@dataclass
class Session:
    """One login: the API token it acts with, its CSRF token, when it began and was last used; for
    a login through the OpenID Connect provider, its refresh token and when the access token
    expires (time.monotonic())."""

    token: str
    csrf: str
    began: float
    seen: float
    refresh: str | None = None
    expires_at: float | None = None


class Sessions:
    """The console's sessions, by id, and who holds each: the registry says who a token is
    (`/v1/whoami`), remembered for `WHO_SECONDS` so that a page does not ask twice; a token the
    registry refuses is no session."""

    def __init__(
        self,
        whoami: Callable[[str], Awaitable[dict[str, str] | None]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.whoami = whoami
        self.clock = clock
        self.known: dict[str, tuple[float, Principal | None]] = {}
        self.open: OrderedDict[str, Session] = OrderedDict()  # by the id's SHA-256, oldest use first

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def begin(self, token: str, *, refresh: str | None = None, expires_at: float | None = None) -> str:
        """A new session acting with `token`; its id (what the cookie holds)."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        self.open[self._key(session_id)] = Session(token, secrets.token_urlsafe(32), now, now, refresh, expires_at)
        while len(self.open) > MOST_SESSIONS:  # the least recently used goes first
            self.open.popitem(last=False)
        return session_id

    def session(self, request: Request) -> Session | None:
        """The request's live session (an expired one is forgotten)."""
        session_id = request.cookies.get(COOKIE)
        if not session_id:
            return None
        key = self._key(session_id)
        found = self.open.get(key)
        if found is None:
            return None
        now = self.clock()
        if now - found.began > SESSION_SECONDS or now - found.seen > IDLE_SECONDS:
            del self.open[key]
            return None
        found.seen = now
        self.open.move_to_end(key)
        return found

    def token_of(self, request: Request) -> str | None:
        """The API token the request's session acts with."""
        found = self.session(request)
        return found.token if found else None

    def end(self, request: Request) -> None:
        """End the request's session (logout): its id opens nothing any more."""
        session_id = request.cookies.get(COOKIE)
        if session_id:
            self.open.pop(self._key(session_id), None)

    def csrf_ok(self, request: Request, presented: str | None) -> bool:
        """Whether a form's CSRF token is the session's, and the request comes from this origin."""
        found = self.session(request)
        if found is None or not presented or not hmac.compare_digest(found.csrf, presented):
            return False
        return same_origin(request)

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
        principal = (
            Principal(found["actor"], role, found.get("subject", ""))  # type: ignore[arg-type]
            if found and role in RANK
            else None
        )
        if len(self.known) > 10_000:
            self.known.clear()
        self.known[key] = (now, principal)
        return principal


def same_origin(request: Request) -> bool:
    """Whether a browser sent the request from this origin: `Sec-Fetch-Site` when the browser
    sends it, else `Origin`, else `Referer` (a request with none of them is not a browser's
    cross-site form, which always carries at least one)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and urlparse(origin).netloc == host
    referer = request.headers.get("referer")
    return referer is None or urlparse(referer).netloc == host


class Throttle:
    """Failed logins per client address: the first `free` cost nothing; after them, each attempt
    must wait 2^(n - free) s (at most `longest`) after the last failure, or is answered 429 without
    the token being looked at. A success clears the address."""

    def __init__(self, *, free: int = 5, longest: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.free = free
        self.longest = longest
        self.clock = clock
        self.failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def wait(self, address: str) -> float:
        """Seconds before `address` may try again (0: now)."""
        count, last = self.failures.get(address, (0, 0.0))
        if count < self.free:
            return 0.0
        delay = min(self.longest, 2.0 ** (count - self.free))
        return max(0.0, last + delay - self.clock())

    def failed(self, address: str) -> None:
        count, _ = self.failures.pop(address, (0, 0.0))
        self.failures[address] = (count + 1, self.clock())
        while len(self.failures) > MOST_SESSIONS:
            self.failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self.failures.pop(address, None)

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))


def may(principal: Principal, role: str) -> bool:
    """Whether the principal's role is at least `role`."""
    return RANK[principal.role] >= RANK[role]


def keep_session(response: Response, request: Request, session_id: str) -> None:
    """Set the session cookie (Secure when the console is reached over HTTPS)."""
    response.set_cookie(
        COOKIE,
        session_id,
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
