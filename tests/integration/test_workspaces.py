"""Workspaces through the registry's API on PostgreSQL: each model belongs to its spec's workspace;
a role granted in one workspace opens that workspace's models and nothing of another's (listing
hides them, a read or an action on one is 403 and the action's refusal is audited); applying a
spec takes admin in the spec's workspace and in the one the model belongs to."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from services.alerter import domain
from services.alerter.app import AlerterService
from services.alerter.app import build as build_alerter
from services.alerter.config import parse_config
from services.alerter.store import SqlStore
from services.registry.app import Registry, build
from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TOKENS = ",".join(
    [
        "root-token=admin:root",
        "a-admin=admin@team-a:ada",
        "a-op=operator@team-a:olga",
        "a-view=viewer@team-a:vera",
        "b-op=operator@team-b:bert",
    ]
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def spec(model: str, workspace: str) -> str:
    text = (ROOT / "schemas/examples/model-spec.yaml").read_text().replace("model: churn", f"model: {model}")
    text = text.replace("dataset: churn", f"dataset: {model}")
    return text.replace(f"model: {model}\n", f"model: {model}\nworkspace: {workspace}\n", 1)


@pytest.fixture
async def registry(settings: Settings) -> AsyncIterator[Registry]:
    update = {"api_tokens": SecretStr(TOKENS), "otlp_endpoint": None, "service_name": "registry"}
    started = build(settings.model_copy(update=update))
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
async def http(registry: Registry) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=registry.api), base_url="http://registry") as c:
        yield c


async def test_a_role_in_one_workspace_opens_its_models_and_nothing_of_anothers(http: httpx.AsyncClient) -> None:
    run = uuid.uuid4().hex[:6]
    a, b = f"ws-{run}-a", f"ws-{run}-b"
    for model, workspace in ((a, "team-a"), (b, "team-b")):
        applied = await http.post("/v1/specs", json={"spec_yaml": spec(model, workspace)}, headers=bearer("root-token"))
        assert applied.status_code == 200, applied.text

    async def listed(token: str) -> set[str]:
        found = await http.get("/v1/models", params={"q": f"ws-{run}"}, headers=bearer(token))
        return {m["name"] for m in found.json()}

    assert await listed("root-token") == {a, b}
    assert await listed("a-op") == await listed("a-view") == {a}
    assert await listed("b-op") == {b}
    summary = (await http.get(f"/v1/models/{a}", headers=bearer("a-view"))).json()
    assert summary["workspace"] == "team-a"

    read = await http.get(f"/v1/models/{b}", headers=bearer("a-op"))
    assert read.status_code == 403
    assert read.json()["detail"] == f"olga has no role in workspace 'team-b' (model {b})"
    forged = await http.post(f"/v1/models/{b}/retrain", json={"reason": "forged"}, headers=bearer("a-op"))
    assert forged.status_code == 403
    weaker = await http.post(f"/v1/models/{a}/retrain", json={}, headers=bearer("a-view"))
    assert weaker.status_code == 403
    assert weaker.json()["detail"] == "role viewer in workspace 'team-a' may not do this; it needs operator"
    allowed = await http.post(f"/v1/models/{a}/retrain", json={}, headers=bearer("a-op"))
    assert allowed.status_code != 403, allowed.text

    audit = (await http.get("/v1/audit", params={"target": b}, headers=bearer("root-token"))).json()
    refused = [e for e in audit if e["actor"] == "olga"]
    assert [(e["action"], e["outcome"]) for e in refused] == [
        ("POST /v1/models/{name}/retrain", "refused"),
        ("GET /v1/models/{name}", "refused"),
    ], "every refused request on another workspace's model is audited, reads too"
    assert "no role in workspace 'team-b'" in refused[0]["detail"]["error"]
    labels = {"labels": [{"request_id": f"r-{run}", "label": 1, "observed_at": datetime.now(UTC).isoformat()}]}
    theirs = await http.post("/v1/events/labels-arrived", json={"model": b, **labels}, headers=bearer("a-op"))
    assert theirs.status_code == 403 and "may not publish for workspace 'team-b'" in theirs.json()["detail"]
    ours = await http.post("/v1/events/labels-arrived", json={"model": a, **labels}, headers=bearer("a-op"))
    assert ours.status_code == 202, ours.text
    data = {"dataset": b, "version": f"v-{run}", "uri": "s3://modelbus-artifacts/x.csv", "format": "csv"}
    assert (await http.post("/v1/events/data-arrived", json=data, headers=bearer("a-op"))).status_code == 403
    own_data = await http.post("/v1/events/data-arrived", json={**data, "dataset": a}, headers=bearer("a-op"))
    assert own_data.status_code == 202, own_data.text
    mine = (await http.get("/v1/audit", params={"limit": 1000}, headers=bearer("a-op"))).json()
    assert b not in {e["target"].split("@")[0] for e in mine}, "team-b's entries are not team-a's to read"
    assert a in {e["target"].split("@")[0] for e in mine}


async def test_applying_a_spec_takes_admin_in_its_workspace_and_in_the_models(http: httpx.AsyncClient) -> None:
    run = uuid.uuid4().hex[:6]
    own, other = f"ws-{run}-own", f"ws-{run}-other"
    assert (await http.post("/v1/specs", json={"spec_yaml": spec(own, "team-a")}, headers=bearer("a-admin"))).is_success
    elsewhere = await http.post("/v1/specs", json={"spec_yaml": spec(other, "team-b")}, headers=bearer("a-admin"))
    assert elsewhere.status_code == 403
    assert "may not apply specs in workspace 'team-b'" in elsewhere.json()["detail"]
    by_root = await http.post("/v1/specs", json={"spec_yaml": spec(other, "team-b")}, headers=bearer("root-token"))
    assert by_root.is_success
    moved = await http.post("/v1/specs", json={"spec_yaml": spec(other, "team-a")}, headers=bearer("a-admin"))
    assert moved.status_code == 403 and f"model {other} belongs to 'team-b'" in moved.json()["detail"]
    assert (await http.get(f"/v1/models/{other}", headers=bearer("root-token"))).json()["workspace"] == "team-b"
    operator = await http.post("/v1/specs", json={"spec_yaml": spec(own, "team-a")}, headers=bearer("a-op"))
    assert operator.status_code == 403, "applying a spec is an admin's"


@pytest.fixture
async def alerter(settings: Settings) -> AsyncIterator[AlerterService]:
    tuned = settings.model_copy(
        update={"api_tokens": SecretStr(TOKENS), "otlp_endpoint": None, "service_name": "alerter"}
    )
    config = parse_config("route:\n  receiver: log\nreceivers:\n  - name: log\n    log: true\n")
    service = build_alerter(tuned, config=config)
    await service.start()
    yield service
    await service.stop()


async def test_alerts_and_silences_are_seen_and_acted_on_per_workspace(alerter: AlerterService) -> None:
    run = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    raised = {}
    async with alerter.sessions() as session, session.begin():
        kept = SqlStore(session, alerter.settings.topic_prefix)
        for workspace in ("team-a", "team-b"):
            model = f"ws-{run}-{workspace}"
            alert = domain.Alert(
                model=model,
                labels={"alertname": "ModelDriftDetected", "model": model, "kind": "drift", "workspace": workspace},
                annotations={"summary": f"drift of {model}"},
                severity="warning",
                source_event_type="DriftDetected",
                source_event_id=f"e-{workspace}-{run}",
            )
            await kept.raise_alert(alert, now)
            raised[workspace] = alert.fingerprint
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=alerter.api), base_url="http://alerter") as http:

        async def seen(token: str, path: str = "/v1/alerts") -> set[str]:
            found = (await http.get(path, headers=bearer(token))).json()
            return {a["fingerprint"] for a in found} & set(raised.values())

        assert await seen("root-token") == set(raised.values())
        assert await seen("a-op") == {raised["team-a"]}
        assert await seen("b-op") == {raised["team-b"]}
        amtool = (await http.get("/api/v2/alerts", headers=bearer("b-op"))).json()
        assert {a["labels"]["model"] for a in amtool if run in a["labels"]["model"]} == {f"ws-{run}-team-b"}

        other = await http.post(f"/v1/alerts/{raised['team-b']}/ack", json={"comment": "mine?"}, headers=bearer("a-op"))
        assert other.status_code == 403 and "belongs to workspace 'team-b'" in other.json()["detail"]
        mine = await http.post(f"/v1/alerts/{raised['team-a']}/ack", json={"comment": "on it"}, headers=bearer("a-op"))
        assert mine.status_code == 200, mine.text

        wide = {"matchers": [f'model=~"ws-{run}-.*"'], "duration": "1h", "comment": "quiet"}
        refused = await http.post("/v1/silences", json=wide, headers=bearer("a-op"))
        assert refused.status_code == 403
        assert 'a silence needs the matcher workspace="team-a"' in refused.json()["detail"]
        scoped = {**wide, "matchers": [*wide["matchers"], 'workspace="team-a"']}
        made = await http.post("/v1/silences", json=scoped, headers=bearer("a-op"))
        assert made.status_code == 201, made.text
        silence = made.json()["id"]
        listed = {s["id"] for s in (await http.get("/v1/silences", headers=bearer("b-op"))).json()}
        assert silence not in listed, "team-b does not see team-a's silence"
        ended = await http.delete(f"/api/v2/silence/{silence}", headers=bearer("b-op"))
        assert ended.status_code == 403
        am_refused = await http.post(
            "/api/v2/silences",
            json={"matchers": [{"name": "model", "value": "x", "isRegex": False}], "startsAt": now.isoformat(),
                  "endsAt": (now + timedelta(hours=1)).isoformat(), "createdBy": "bert", "comment": "x"},
            headers=bearer("b-op"),
        )  # fmt: skip
        assert am_refused.status_code == 403
        assert (await http.get("/v1/audit", headers=bearer("a-op"))).status_code == 403
        assert (await http.get("/v1/audit", headers=bearer("root-token"))).status_code == 200


async def test_a_service_account_acts_in_its_workspace_only_until_revoked(http: httpx.AsyncClient) -> None:
    run = uuid.uuid4().hex[:6]
    own, other = f"ws-{run}-ci-a", f"ws-{run}-ci-b"
    for model, workspace in ((own, "team-a"), (other, "team-b")):
        assert (
            await http.post("/v1/specs", json={"spec_yaml": spec(model, workspace)}, headers=bearer("root-token"))
        ).is_success
    asked = {"name": f"ci-{run}", "workspace": "team-a", "role": "operator", "reason": "the import job"}
    assert (await http.post("/v1/service-accounts", json=asked, headers=bearer("a-op"))).status_code == 403
    elsewhere = await http.post(
        "/v1/service-accounts", json={**asked, "workspace": "team-b"}, headers=bearer("a-admin")
    )
    assert elsewhere.status_code == 403, "an admin of team-a makes no account for team-b"
    made = await http.post("/v1/service-accounts", json=asked, headers=bearer("a-admin"))
    assert made.status_code == 201, made.text
    account, token = made.json(), made.json()["token"]
    assert token.startswith("mbsa_") and len(token) > 40

    listed = (await http.get("/v1/service-accounts", headers=bearer("a-admin"))).json()
    mine = [a for a in listed if a["id"] == account["id"]]
    assert mine and "token" not in mine[0] and token not in str(listed), "a token is shown once"
    assert (await http.get("/v1/service-accounts", headers=bearer("b-op"))).status_code == 403, "admins only"

    who = (await http.get("/v1/whoami", headers=bearer(token))).json()
    assert (who["actor"], who["role"], who["subject"]) == (f"ci-{run}", "operator", f"service-account:{account['id']}")
    assert (await http.post(f"/v1/models/{own}/retrain", json={}, headers=bearer(token))).status_code != 403
    assert (await http.post(f"/v1/models/{other}/retrain", json={}, headers=bearer(token))).status_code == 403
    assert (
        await http.post("/v1/specs", json={"spec_yaml": spec(own, "team-a")}, headers=bearer(token))
    ).status_code == 403

    revoked = await http.delete(f"/v1/service-accounts/{account['id']}", headers=bearer("a-admin"))
    assert revoked.status_code == 200 and revoked.json()["revoked_by"] == "ada"
    await asyncio.sleep(5.1)  # the accounts each API remembers are read again after 5 s
    assert (await http.get("/v1/whoami", headers=bearer(token))).status_code == 401
    audit = (
        await http.get("/v1/audit", params={"action": "revoke-service-account"}, headers=bearer("root-token"))
    ).json()
    assert f"service-account:{account['id']}" in {e["target"] for e in audit}
