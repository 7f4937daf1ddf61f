"""Who an OpenID Connect access token is: a JWT the provider signed, checked against the keys it
publishes (its JWKS, found through its discovery document), for this issuer and audience, not
expired; its groups claim mapped to a role.

The keys are fetched when first needed, again every `refresh_seconds`, and at once when a token
names a key not seen yet (the provider rotated its keys), but not more often than every
`unknown_key_seconds`: a stream of tokens with made-up key ids costs one fetch per interval, not
one per token. Only asymmetric signatures are accepted (never `none`, never a shared secret).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from shared.runtime.settings import Role

ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
RANK: dict[str, int] = {"viewer": 1, "operator": 2, "admin": 3}
LEEWAY_SECONDS = 30


class Invalid(Exception):
    """The token is not one of the provider's valid tokens for this audience (answered 401)."""


class Unassigned(Exception):
    """A valid token whose groups have no role here (answered 403)."""


class Unavailable(Exception):
    """The provider's keys cannot be read, and none are known yet (answered 503)."""


ALL = "*"  # every workspace


@dataclass(frozen=True)
class Claims:
    """What the platform takes from a valid token: who, and their role in each workspace."""

    subject: str
    name: str
    groups: tuple[str, ...]
    grants: tuple[tuple[str, Role], ...]  # (workspace or ALL, role)


@dataclass(frozen=True)
class Grant:
    """A role in a workspace (ALL: in every one) for the members of a group, or for one user
    (`user:NAME`, their preferred username or subject)."""

    holder: str
    role: Role
    workspace: str = ALL


def grants(text: str) -> list[Grant]:
    """Parse `HOLDER=ROLE[@WORKSPACE]`, comma-separated (MODELBUS_OIDC_ROLES): HOLDER a group, or
    `user:NAME`."""
    found = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        holder, sep, scoped = item.rpartition("=")
        role, _, workspace = scoped.partition("@")
        if not sep or not holder or role not in RANK:
            raise ValueError(
                f"oidc_roles entries must look like GROUP=viewer|operator|admin[@WORKSPACE] (or user:NAME=...), "
                f"not {item!r}"
            )
        found.append(Grant(holder, role, workspace or ALL))  # type: ignore[arg-type]
    return found


def display_name(payload: Mapping[str, Any]) -> str:
    """The name the audit log and the pages show for a token's holder."""
    return str(payload.get("name") or payload.get("preferred_username") or payload.get("email") or payload["sub"])


@dataclass
class Verifier:
    """Checks the provider's access tokens; `roles` says which groups and users have which role in
    which workspace (a member of several groups has each of their roles, the strongest counting)."""

    issuer: str
    audience: str
    roles: Sequence[Grant]
    groups_claim: str = "groups"
    refresh_seconds: float = 600.0
    unknown_key_seconds: float = 5.0
    http: httpx.AsyncClient | None = None
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def decode(self, token: str) -> dict[str, Any]:
        """The token's claims once its signature, issuer, audience and times check out; Invalid
        (with the reason) if not."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Invalid(f"not a JWT: {exc}") from exc
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise Invalid(f"signature algorithm {algorithm!r} is not accepted")
        key = await self._key(header.get("kid"))
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Invalid("the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise Invalid(f"the token is not for this audience ({self.audience})") from exc
        except jwt.InvalidIssuerError as exc:
            raise Invalid(f"the token is not from this issuer ({self.issuer})") from exc
        except jwt.InvalidSignatureError as exc:
            raise Invalid("the token's signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise Invalid(str(exc)) from exc
        return payload

    async def claims(self, token: str) -> Claims:
        """The token's subject, name, groups and role; Invalid or Unassigned (with the reason)."""
        payload = await self.decode(token)
        groups = payload.get(self.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        subject = str(payload["sub"])
        name = display_name(payload)
        holders = {g for g in groups if isinstance(g, str)} | {f"user:{subject}"}
        if payload.get("preferred_username"):
            holders.add(f"user:{payload['preferred_username']}")
        granted = tuple(sorted({(g.workspace, g.role) for g in self.roles if g.holder in holders}))
        if not granted:
            raise Unassigned(f"{name} has no role here: none of the groups {sorted(map(str, groups))} is granted one")
        return Claims(subject, name, tuple(str(g) for g in groups), granted)

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        now = time.monotonic()
        if now - self.fetched_at > self.refresh_seconds:
            await self._fetch(now)
        found = self._find(kid)
        if found is None and now - self.fetched_at >= self.unknown_key_seconds:
            await self._fetch(now)  # a key not seen yet: the provider may have rotated its keys
            found = self._find(kid)
        if found is None:
            raise Invalid(f"the token's key {kid!r} is not one of the issuer's keys")
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)

    async def _fetch(self, now: float) -> None:
        async with self.lock:
            if self.fetched_at >= now:  # another request fetched them meanwhile
                return
            http = self.http or httpx.AsyncClient(timeout=10)
            try:
                discovery = await http.get(f"{self.issuer.rstrip('/')}/.well-known/openid-configuration")
                discovery.raise_for_status()
                published = await http.get(discovery.json()["jwks_uri"])
                published.raise_for_status()
                keys = jwt.PyJWKSet.from_dict(published.json()).keys
            except (httpx.HTTPError, KeyError, ValueError, jwt.PyJWTError) as exc:
                if not self.keys:
                    raise Unavailable(f"the issuer's keys cannot be read now: {exc}") from exc
                self.fetched_at = time.monotonic()  # keep the keys known so far; ask again later
                return
            finally:
                if self.http is None:
                    await http.aclose()
            self.keys = {k.key_id or f"key-{n}": k for n, k in enumerate(keys)}
            self.fetched_at = time.monotonic()
