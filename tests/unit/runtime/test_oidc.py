"""The APIs' check of an OpenID Connect provider's access tokens, through the same dependency every
route uses (a bearer token in, 200/401/403 out), against an issuer whose discovery document and
JWKS are served over HTTP by a transport the test controls: it signs tokens, rotates its keys and
counts how often its keys are read."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from pydantic import SecretStr

from shared.runtime import oidc
from shared.runtime.httpapi import Identify, Operator, Principal, Viewer
from shared.runtime.settings import Settings

ISSUER = "https://id.example.test/realms/modelbus"
AUDIENCE = "modelbus"


class Issuer:
    """A provider: its keys by id, what it publishes, how many times its keys were read."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []
        self.fetches = 0
        self.rotate()

    def rotate(self) -> str:
        kid = f"key-{len(self.keys) + 1}"
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.published.append(kid)
        return kid

    def jwks(self) -> dict[str, Any]:
        found = []
        for kid in self.published:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            found.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": found}

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/certs"})
        if request.url.path.endswith("/certs"):
            self.fetches += 1
            return httpx.Response(200, json=self.jwks())
        return httpx.Response(404)

    def token(self, *, kid: str | None = None, key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
        kid = kid or self.published[-1]
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-ann", "iat": now, "exp": now + 300,
                   "name": "Ann Archer", "groups": ["team-a"], **claims}  # fmt: skip
        return jwt.encode(payload, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


def api(issuer: Issuer, **settings: Any) -> httpx.AsyncClient:
    """An API with a viewer route and an operator route, checking tokens as every modelbus API does."""
    app = FastAPI()
    config = Settings(
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_roles="team-a=operator,team-b=viewer",
        api_tokens=SecretStr("static-token=admin:break-glass"),
        **settings,
    )
    app.state.identify = Identify(config, http=httpx.AsyncClient(transport=httpx.MockTransport(issuer.handle)))

    @app.get("/read")
    async def read(who: Viewer) -> dict[str, str]:
        return {"actor": who.actor, "role": who.role, "subject": who.subject}

    @app.post("/act")
    async def act(who: Operator) -> dict[str, str]:
        return {"actor": who.actor}

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_providers_token_names_its_holder_and_the_role_of_their_group(issuer: Issuer) -> None:
    async with api(issuer) as http:
        answer = await http.get("/read", headers=bearer(issuer.token()))
        assert answer.json() == {"actor": "Ann Archer", "role": "operator", "subject": "u-ann"}
        assert (await http.post("/act", headers=bearer(issuer.token()))).status_code == 200
        viewer = issuer.token(sub="u-bob", name="Bob Baker", groups=["team-b"])
        assert (await http.get("/read", headers=bearer(viewer))).json()["role"] == "viewer"
        refused = await http.post("/act", headers=bearer(viewer))
        assert refused.status_code == 403 and "needs operator" in refused.json()["detail"]
        both = issuer.token(groups=["team-b", "team-a"])
        assert (await http.get("/read", headers=bearer(both))).json()["role"] == "operator", "the strongest grant"
        static = await http.get("/read", headers=bearer("static-token"))
        assert static.json() == {"actor": "break-glass", "role": "admin", "subject": ""}


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("bad signature", "signature does not verify"),
        ("wrong audience", "not for this audience"),
        ("wrong issuer", "not from this issuer"),
        ("expired", "has expired"),
        ("unknown key", "is not one of the issuer's keys"),
        ("no expiry", 'Token is missing the "exp" claim'),
        ("shared secret", "'HS256' is not accepted"),
        ("unsigned", "'none' is not accepted"),
        ("not a token", "not a JWT"),
    ],
)
async def test_a_token_that_does_not_check_out_is_refused_with_the_reason(
    issuer: Issuer, case: str, reason: str
) -> None:
    now = int(time.time())
    forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = {
        "bad signature": lambda: issuer.token(key=forged),
        "wrong audience": lambda: issuer.token(aud="another-app"),
        "wrong issuer": lambda: issuer.token(iss="https://evil.example.test/realms/modelbus"),
        "expired": lambda: issuer.token(iat=now - 3600, exp=now - 600),
        "unknown key": lambda: jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": now, "exp": now + 60},
            forged,
            "RS256",
            headers={"kid": "made-up"},
        ),
        "no expiry": lambda: jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": now, "groups": ["team-a"]},
            issuer.keys["key-1"],
            "RS256",
            headers={"kid": "key-1"},
        ),
        "shared secret": lambda: jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": now, "exp": now + 60},
            "s" * 32,
            "HS256",
            headers={"kid": "key-1"},
        ),
        "unsigned": lambda: (
            ".".join(
                base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
                for part in (
                    {"alg": "none", "kid": "key-1"},
                    {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 60},
                )
            )
            + "."
        ),
        "not a token": lambda: "a.b.c",
    }
    async with api(issuer) as http:
        answer = await http.get("/read", headers=bearer(tokens[case]()))
    assert answer.status_code == 401
    assert reason in answer.json()["detail"]
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_a_rotated_key_is_fetched_when_a_token_names_it_and_old_tokens_still_verify(issuer: Issuer) -> None:
    async with api(issuer) as http:
        first = issuer.token()
        assert (await http.get("/read", headers=bearer(first))).status_code == 200
        assert issuer.fetches == 1
        issuer.rotate()
        await asyncio.sleep(0)
        verifier = http._transport.app.state.identify.verifier  # type: ignore[attr-defined]
        verifier.fetched_at -= verifier.unknown_key_seconds  # the last fetch was a while ago
        assert (await http.get("/read", headers=bearer(issuer.token()))).status_code == 200, "the new key"
        assert issuer.fetches == 2
        assert (await http.get("/read", headers=bearer(first))).status_code == 200, "the old key is still published"


async def test_made_up_key_ids_cost_one_fetch_per_interval_not_one_per_token(issuer: Issuer) -> None:
    async with api(issuer) as http:
        assert (await http.get("/read", headers=bearer(issuer.token()))).status_code == 200
        forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for n in range(20):
            token = jwt.encode({"sub": "x"}, forged, "RS256", headers={"kid": f"made-up-{n}"})
            assert (await http.get("/read", headers=bearer(token))).status_code == 401
    assert issuer.fetches == 1


async def test_a_valid_token_of_a_group_without_a_role_is_forbidden_not_unauthenticated(issuer: Issuer) -> None:
    async with api(issuer) as http:
        answer = await http.get("/read", headers=bearer(issuer.token(groups=["marketing"])))
    assert answer.status_code == 403
    assert answer.json()["detail"] == "Ann Archer has no role here: none of the groups ['marketing'] is granted one"


async def test_when_the_issuer_cannot_be_reached_the_answer_says_so_and_is_not_a_refusal() -> None:
    down = Issuer()
    down.handle = lambda request: httpx.Response(502)  # type: ignore[method-assign]
    async with api(down) as http:
        answer = await http.get("/read", headers=bearer(down.token()))
    assert answer.status_code == 503 and "cannot be read now" in answer.json()["detail"]


def test_role_grants_are_parsed_and_a_bad_one_is_named() -> None:
    assert oidc.grants("team-a=operator@fraud, platform=admin, user:ann=viewer@churn") == [
        oidc.Grant("team-a", "operator", "fraud"),
        oidc.Grant("platform", "admin", oidc.ALL),
        oidc.Grant("user:ann", "viewer", "churn"),
    ]
    with pytest.raises(ValueError, match="'team-a=owner'"):
        oidc.grants("team-a=owner")


def test_a_static_principal_has_no_subject() -> None:
    assert Principal("ann", "viewer").subject == ""


async def test_with_static_tokens_off_only_the_providers_tokens_open_the_api(issuer: Issuer) -> None:
    async with api(issuer, static_tokens=False) as http:
        assert (await http.get("/read", headers=bearer("static-token"))).status_code == 401
        assert (await http.get("/read", headers=bearer(issuer.token()))).status_code == 200
