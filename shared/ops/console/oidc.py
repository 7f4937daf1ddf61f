"""Logging in to the console with the OpenID Connect provider (MODELBUS_OIDC_ISSUER): the
authorization code flow with PKCE (RFC 7636, S256), as a confidential or a public client.

`/ui/login/oidc` makes a random state, nonce and code verifier, keeps them here (never in the
browser) for `LOGIN_SECONDS`, binds the state to this browser with a short-lived cookie, and sends
the browser to the provider. `/ui/login/callback` takes the provider's answer only for a state it
made and this browser started, once; trades the code (with the verifier) for tokens; checks the
ID token (signature, issuer, audience, nonce); and opens a console session that acts with the
access token, which every API checks again on each call. Before the access token expires the
session renews it with the refresh token; when it cannot, the person logs in again.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import Request

from shared.runtime import oidc
from shared.runtime.settings import Settings

LOGIN_COOKIE = "modelbus_login"
LOGIN_SECONDS = 600
MOST_PENDING = 10_000
RENEW_BEFORE_SECONDS = 30
SCOPES = "openid profile email"


class LoginFailed(Exception):
    """The provider's answer does not open a session; the message says why."""


@dataclass
class Pending:
    """A login begun and not finished: what only this console knows of it."""

    verifier: str
    nonce: str
    next: str
    redirect_uri: str
    began: float


@dataclass(frozen=True)
class Tokens:
    """What a finished login (or a renewal) gives the session."""

    access: str
    refresh: str | None
    expires_at: float  # time.monotonic()
    name: str


def challenge(verifier: str) -> str:
    """PKCE's S256 code challenge of a verifier."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class Provider:
    """The console's client at the provider."""

    settings: Settings
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=15))
    pending: OrderedDict[str, Pending] = field(default_factory=OrderedDict)
    metadata: dict[str, Any] | None = None
    id_tokens: oidc.Verifier = field(init=False)

    def __post_init__(self) -> None:
        self.id_tokens = oidc.Verifier(self.settings.oidc_issuer, self.client_id, [], http=self.http)

    @property
    def client_id(self) -> str:
        return self.settings.oidc_client_id or self.settings.oidc_audience

    @property
    def issuer(self) -> str:
        return self.settings.oidc_issuer

    async def discovered(self) -> dict[str, Any]:
        """The provider's discovery document (read once)."""
        if self.metadata is None:
            try:
                answer = await self.http.get(f"{self.issuer.rstrip('/')}/.well-known/openid-configuration")
                answer.raise_for_status()
            except httpx.HTTPError as exc:
                raise LoginFailed(f"the provider at {self.issuer} cannot be reached: {type(exc).__name__}") from exc
            self.metadata = answer.json()
        return self.metadata

    async def begin(self, next_page: str, redirect_uri: str) -> tuple[str, str]:
        """A new login: (its state, the provider's URL to send the browser to)."""
        metadata = await self.discovered()
        now = time.monotonic()
        while self.pending and (
            len(self.pending) >= MOST_PENDING or now - next(iter(self.pending.values())).began > LOGIN_SECONDS
        ):
            self.pending.popitem(last=False)
        state, verifier, nonce = (secrets.token_urlsafe(32) for _ in range(3))
        self.pending[state] = Pending(verifier, nonce, next_page, redirect_uri, now)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": SCOPES,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge(verifier),
            "code_challenge_method": "S256",
        }
        return state, f"{metadata['authorization_endpoint']}?{urlencode(query)}"

    async def finish(self, state: str, code: str) -> tuple[Tokens, str]:
        """Trade the code for tokens: (the tokens, the page to go to)."""
        login = self.pending.pop(state, None)
        if login is None or time.monotonic() - login.began > LOGIN_SECONDS:
            raise LoginFailed("this login is unknown or took too long: start again")
        answer = await self._token(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": login.redirect_uri,
             "code_verifier": login.verifier}
        )  # fmt: skip
        id_token = answer.get("id_token")
        if not id_token:
            raise LoginFailed("the provider gave no ID token (is the `openid` scope allowed for this client?)")
        try:
            claims = await self.id_tokens.decode(id_token)
        except (oidc.Invalid, oidc.Unavailable) as exc:
            raise LoginFailed(f"the ID token does not check out: {exc}") from exc
        if claims.get("nonce") != login.nonce:
            raise LoginFailed("the ID token was not made for this login (its nonce differs)")
        return self._tokens(answer, oidc.display_name(claims)), login.next

    async def renew(self, refresh: str, name: str) -> Tokens:
        """New tokens from a refresh token."""
        return self._tokens(await self._token({"grant_type": "refresh_token", "refresh_token": refresh}), name)

    async def _token(self, form: dict[str, str]) -> dict[str, Any]:
        metadata = await self.discovered()
        form = {**form, "client_id": self.client_id}
        secret = self.settings.oidc_client_secret.get_secret_value()
        if secret:
            form["client_secret"] = secret
        try:
            answer = await self.http.post(metadata["token_endpoint"], data=form)
        except httpx.HTTPError as exc:
            raise LoginFailed(f"the provider's token endpoint cannot be reached: {type(exc).__name__}") from exc
        if answer.status_code != 200:
            raise LoginFailed(f"the provider refused the {form['grant_type']} grant: {answer.text[:300]}")
        found: dict[str, Any] = answer.json()
        if not found.get("access_token"):
            raise LoginFailed("the provider gave no access token")
        return found

    @staticmethod
    def _tokens(answer: dict[str, Any], name: str) -> Tokens:
        lifetime = float(answer.get("expires_in") or 300)
        return Tokens(answer["access_token"], answer.get("refresh_token"), time.monotonic() + lifetime, name)


def callback_uri(request: Request, prefix: str) -> str:
    """Where the provider sends the browser back: this console's callback, as the browser reached it."""
    return str(request.url.replace(path=f"{prefix}/login/callback", query="", fragment=""))
