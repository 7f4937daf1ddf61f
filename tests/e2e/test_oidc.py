"""Single sign-on and workspaces with the local stack's OpenID Connect provider (Keycloak, `stack up
--oidc`; the module starts it if it is not running): a registry and a console that accept the
provider's tokens (team-a operates workspace team-a, team-b team-b) and one break-glass token, a
model in each workspace; a person of team A logs in to the console in chromium through the
provider's own login page and sees team A's model only; the API takes the provider's access
tokens, forbids another team's model and audits a forged action on it with the person's name and
subject, and refuses a tampered token."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from bench.common import free_port, wait_http
from shared.ops import credentials
from shared.ops.identity import ISSUER, Identity, password, token
from shared.runtime.broker import drop_topics, ensure_topics
from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
BREAK_GLASS = f"glass-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Platform:
    api: str
    ui: str
    settings: Settings
    models: dict[str, str]  # workspace -> a model of it


@pytest.fixture(scope="module")
def provider() -> Iterator[Settings]:
    settings = Settings()
    keycloak = Identity("oidc", settings, print)
    started = not keycloak.running()
    if started:
        keycloak.home.mkdir(parents=True, exist_ok=True)
        keycloak.start()
    yield settings
    if started:
        keycloak.stop()


@pytest.fixture(scope="module")
def platform(provider: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    logs = tmp_path_factory.mktemp("oidc")
    registry, console = free_port(), free_port()
    prefix = f"oidc-{uuid.uuid4().hex[:8]}"
    admin = credentials.as_principal(provider, "admin").model_copy(update={"topic_prefix": prefix})
    asyncio.run(ensure_topics(admin))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")},
        **credentials.principal_env(provider, "admin"),  # the admin: topics of a prefix of its own
        "MODELBUS_TOPIC_PREFIX": prefix,
        "MODELBUS_OTLP_ENDPOINT": "",
        "MODELBUS_API_TOKENS": f"{BREAK_GLASS}=admin:break-glass",
        "MODELBUS_OIDC_ISSUER": ISSUER,
        "MODELBUS_OIDC_ROLES": "team-a=operator@team-a,team-b=operator@team-b",
        "MODELBUS_REGISTRY_PORT": str(registry),
        "MODELBUS_CONSOLE_PORT": str(console),
        "MODELBUS_API_URL": f"http://127.0.0.1:{registry}",
    }
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=env, stderr=(logs / f"{name}.log").open("w")
        )
        for name, module in (("registry", "services.registry"), ("console", "shared.ops.console"))
    }
    try:
        wait_http(f"http://127.0.0.1:{registry}/readyz", timeout=90, what="the registry", process=started["registry"])
        wait_http(f"http://127.0.0.1:{console}/readyz", timeout=60, what="the console", process=started["console"])
        api = f"http://127.0.0.1:{registry}"
        models = {}
        example = (ROOT / "schemas/examples/model-spec.yaml").read_text()
        for workspace in ("team-a", "team-b"):
            model = f"sso-{workspace}-{uuid.uuid4().hex[:6]}"
            text = example.replace("model: churn\n", f"model: {model}\nworkspace: {workspace}\n", 1)
            applied = httpx.post(f"{api}/v1/specs", json={"spec_yaml": text}, headers=bearer(BREAK_GLASS), timeout=30)
            assert applied.status_code == 200, applied.text
            models[workspace] = model
        yield Platform(api, f"http://127.0.0.1:{console}/ui", provider, models)
    finally:
        for process in started.values():
            process.terminate()
        for process in started.values():
            process.wait(timeout=30)
        asyncio.run(drop_topics(admin))


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_the_api_takes_the_providers_token_and_audits_a_forged_action_on_another_team_with_the_subject(
    platform: Platform,
) -> None:
    ann = token("ann", platform.settings.credentials_dir)
    who = httpx.get(f"{platform.api}/v1/whoami", headers=bearer(ann), timeout=10).json()
    assert (who["actor"], who["role"]) == ("Ann Archer", "operator")
    assert len(who["subject"]) == 36, who  # Keycloak's user id
    listed = httpx.get(f"{platform.api}/v1/models", params={"q": "sso-"}, headers=bearer(ann), timeout=10).json()
    assert platform.models["team-a"] in {m["name"] for m in listed}
    assert platform.models["team-b"] not in {m["name"] for m in listed}
    theirs = platform.models["team-b"]
    forged = httpx.post(f"{platform.api}/v1/models/{theirs}/retrain", headers=bearer(ann), json={}, timeout=10)
    assert forged.status_code == 403, forged.text
    audit = httpx.get(f"{platform.api}/v1/audit", params={"target": theirs}, headers=bearer(BREAK_GLASS), timeout=10)
    [entry] = [e for e in audit.json() if e["actor"] == "Ann Archer"]
    assert (entry["subject"], entry["outcome"]) == (who["subject"], "refused")
    assert "no role in workspace 'team-b'" in entry["detail"]["error"]


def test_another_team_is_forbidden_and_a_tampered_token_is_refused(platform: Platform) -> None:
    bob = token("bob", platform.settings.credentials_dir)
    theirs = platform.models["team-a"]
    forbidden = httpx.get(f"{platform.api}/v1/models/{theirs}", headers=bearer(bob), timeout=10)
    assert forbidden.status_code == 403
    assert forbidden.json()["detail"] == f"Bob Baker has no role in workspace 'team-a' (model {theirs})"
    ann = token("ann", platform.settings.credentials_dir)
    header, payload, signature = ann.split(".")
    tampered = ".".join([header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")])
    refused = httpx.get(f"{platform.api}/v1/whoami", headers=bearer(tampered), timeout=10)
    assert refused.status_code == 401 and "signature does not verify" in refused.json()["detail"]
    glass = httpx.get(f"{platform.api}/v1/whoami", headers=bearer(BREAK_GLASS), timeout=10).json()
    assert glass == {"actor": "break-glass", "role": "admin", "subject": ""}


def test_a_person_logs_in_to_the_console_through_the_providers_login_page(platform: Platform) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is not installed (scripts/bootstrap.sh --test installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{platform.ui}/")
            assert "Log in" in page.title()
            page.click("#sso")
            page.wait_for_url(f"{ISSUER}/**")
            page.fill("#username", "ann")
            page.fill("#password", password(platform.settings.credentials_dir, "ann"))
            page.click("#kc-login")
            page.wait_for_url(f"{platform.ui}/")
            assert "Ann Archer" in page.inner_text("header"), page.inner_text("header")
            listed = page.inner_text("main")
            assert platform.models["team-a"] in listed and platform.models["team-b"] not in listed, listed[:2000]
            ours = {c["name"]: c for c in page.context.cookies() if c["path"].startswith("/ui")}
            assert set(ours) == {"modelbus_console"} and ours["modelbus_console"]["httpOnly"], ours
            assert "eyJ" not in ours["modelbus_console"]["value"] + page.content(), "no token reaches the page"
            page.click("header .who button")  # log out
            page.wait_for_url(f"{platform.ui}/login")
            page.goto(f"{platform.ui}/login/callback?state=forged&code=x")
            assert "not started in this browser" in page.inner_text("main")
        finally:
            browser.close()
