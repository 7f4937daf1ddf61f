"""The console's pictures and its session rules, without a server: the figures it hands plotly,
the lineage graph, the trace waterfall, CSRF and where a login may lead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.testclient import TestClient

from services.registry import domain
from shared.ops.console import auth, charts, drawings
from shared.runtime.httpapi import Principal

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def step(n: int, version: int, to_state: str, traffic: list[tuple[int, float]], reason: str = "because") -> Any:
    return domain.RolloutStep(
        event_id=f"ev-{n}",
        rollout_id=f"ro-{version}",
        candidate_version=version,
        stable_version=version - 1 or None,
        from_state="canary",
        to_state=to_state,
        step=0,
        traffic=[{"version": v, "percent": p, "role": "stable"} for v, p in traffic],
        reason=reason,
        evidence={},
        actor="deployer",
        occurred_at=T0 + timedelta(minutes=n),
    )


def test_the_rollout_timeline_has_a_point_per_transition_and_a_line_per_version() -> None:
    steps = [
        step(0, 1, "promoted", [(1, 100)]),
        step(1, 2, "canary", [(1, 90), (2, 10)], "canary at 10 %"),
        step(2, 2, "promoted", [(2, 100)], "within every threshold <b>"),
    ]
    figure = charts.rollout_timeline(list(reversed(steps)))
    marks, *lines = figure["data"]
    assert marks["name"] == "transitions" and len(marks["x"]) == 3
    assert "canary at 10 %" in marks["text"][1] and marks["x"] == sorted(marks["x"])
    assert [line["name"] for line in lines] == ["v1", "v2"]
    v1 = dict(zip(lines[0]["x"], lines[0]["y"], strict=True))
    assert list(v1.values()) == [100, 90, 0], "v1's share where it changed"


def test_many_versions_fold_the_oldest_into_one_line() -> None:
    steps = [step(v, v, "promoted", [(v, 100)]) for v in range(1, 31)]
    figure = charts.rollout_timeline(steps)
    names = [t["name"] for t in figure["data"][1:]]
    assert len(names) == charts.MAX_LINES and names[0] == "v1-v19" and names[-1] == "v30"
    assert len(figure["data"][0]["x"]) == 30


def window(version: int, minute: int, drifted: set[str], dataset: bool) -> dict[str, Any]:
    features = [
        {"feature": f, "test": "ks", "score": 0.3 if f in drifted else 0.02, "p_value": 1e-6 if f in drifted else 0.8,
         "threshold": 0.05, "drifted": f in drifted}
        for f in ("age", "plan")
    ]  # fmt: skip
    end = (T0 + timedelta(minutes=minute)).isoformat()
    return {"version": version, "ended_at": end, "features": features, "dataset_drift": dataset,
            "drifted_share": len(drifted) / 2, "rows": 100}  # fmt: skip


def test_the_drift_heatmap_gives_each_version_its_rows_and_marks_dataset_drift() -> None:
    windows = [window(1, 1, set(), False), window(1, 2, {"age", "plan"}, True), window(2, 3, {"plan"}, False)]
    figure = charts.drift_heatmap(windows)
    labels = figure["layout"]["yaxis"]["ticktext"]
    assert labels == ["v1 plan", "v1 age", "v1 dataset drift", "v2 plan", "v2 age", "v2 dataset drift"]
    heat = [t for t in figure["data"] if t["type"] == "heatmap"]
    assert [len(t["x"]) for t in heat] == [2, 1]
    flagged = {labels[row] for t in heat for i, row in enumerate(t["y"]) if "drifted" in t["text"][i]}
    assert flagged == {"v1 age", "v1 plan", "v2 plan"}
    marks = [t for t in figure["data"] if t["type"] == "scatter"]
    assert [len(m["x"]) for m in marks] == [1, 0] and labels[marks[0]["y"][0]] == "v1 dataset drift"


def lineage(summary: str) -> domain.Lineage:
    version = {
        "model": "churn", "version": 3, "status": "serving", "status_reason": "", "run_id": "run-1",
        "task": "classification", "estimator": "x.Y", "params": {}, "metrics": {}, "artifacts": [], "manifest": {},
        "dataset": "churn", "dataset_version": "v7", "code_version": "1", "spec_revision": 1, "aliases": [],
        "tags": {}, "correlation_id": "c", "created_at": T0, "updated_at": T0,
    }  # fmt: skip
    drift = {
        "event_id": "e",
        "kind": "DriftDetected",
        "version": 3,
        "summary": summary,
        "payload": {},
        "occurred_at": T0,
    }
    return domain.Lineage.model_validate(
        {
            "version": version,
            "dataset": None,
            "run": None,
            "spec": None,
            "evaluations": [],
            "rollouts": [step(1, 3, "canary", [(3, 10)]).model_dump()],
            "history": [drift],
        }
    )


def test_the_lineage_graph_links_each_node_and_escapes_what_it_shows() -> None:
    columns = drawings.lineage_nodes(lineage('<script>alert("x")</script>'), "/ui")
    assert [c[0].kind for c in columns] == ["dataset", "run", "version", "rollout", "drift"]
    assert columns[0][0].href == "/ui/datasets/churn/v7" and columns[2][0].href == "/ui/models/churn/versions/3"
    svg = str(drawings.lineage_svg(columns))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count('class="node"') == 5 and svg.count("<line") == 4


def test_the_waterfall_places_spans_by_time_and_names_the_traces_it_follows() -> None:
    trace = {
        "processes": {"p1": {"serviceName": "trainer"}, "p2": {"serviceName": "registry"}},
        "spans": [
            {"spanID": "b", "processID": "p2", "operationName": "handle", "startTime": 1_500, "duration": 500,
             "references": [{"refType": "CHILD_OF", "spanID": "a", "traceID": "t"}]},
            {"spanID": "a", "processID": "p1", "operationName": "lifecycle retrain", "startTime": 1_000,
             "duration": 1_000, "references": [{"refType": "FOLLOWS_FROM", "spanID": "z", "traceID": "f" * 32}]},
        ],
    }  # fmt: skip
    rows, services, total, links = drawings.waterfall(trace)
    assert [(r.name, r.depth) for r in rows] == [("lifecycle retrain", 0), ("handle", 1)]
    assert rows[1].left == 50 and rows[1].width == 50 and total == 1_000
    assert services == ["registry", "trainer"] and links == [{"trace": "f" * 32, "span": "lifecycle retrain"}]


def test_a_login_only_leads_to_a_console_page() -> None:
    assert auth.safe_next("/ui/models/churn") == "/ui/models/churn"
    for elsewhere in ("https://evil.example/ui/", "//evil.example", "/ui\\..\\x", "/v1/models", None):
        assert auth.safe_next(elsewhere) == "/ui/"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def nobody(token: str) -> dict[str, str] | None:
    return None


def session_app(sessions: auth.Sessions) -> TestClient:
    api = FastAPI()

    @api.post("/ui/check")
    async def check(request: Request, csrf: str = Form("")) -> dict[str, Any]:
        return {"ok": sessions.csrf_ok(request, csrf), "token": sessions.token_of(request)}

    @api.post("/ui/out")
    async def out(request: Request) -> None:
        sessions.end(request)

    return TestClient(api, base_url="http://console")


def test_the_cookie_names_a_random_session_never_the_token_and_the_session_ends_at_logout_or_expiry() -> None:
    clock = Clock()
    sessions = auth.Sessions(nobody, clock=clock)
    client = session_app(sessions)
    first, second = sessions.begin("tok"), sessions.begin("tok")
    assert first != second and "tok" not in first and len(first) >= 43, "256 random bits, nothing of the token"
    client.cookies.set(auth.COOKIE, first)
    assert client.post("/ui/check").json()["token"] == "tok"
    client.cookies.set(auth.COOKIE, "tok")
    assert client.post("/ui/check").json()["token"] is None, "the token itself opens no session"
    client.cookies.set(auth.COOKIE, first)
    clock.now += auth.IDLE_SECONDS + 1
    assert client.post("/ui/check").json()["token"] is None, "idle too long"
    client.cookies.set(auth.COOKIE, second)
    assert client.post("/ui/check").json()["token"] is None, "the other one too"
    third = sessions.begin("tok")
    client.cookies.set(auth.COOKIE, third)
    for _ in range(int(auth.SESSION_SECONDS / auth.IDLE_SECONDS) + 1):  # used often, yet not for ever
        clock.now += auth.IDLE_SECONDS - 1
        client.post("/ui/check")
    assert client.post("/ui/check").json()["token"] is None, "past its lifetime"
    fourth = sessions.begin("tok")
    client.cookies.set(auth.COOKIE, fourth)
    assert client.post("/ui/check").json()["token"] == "tok"
    client.post("/ui/out")
    assert client.post("/ui/check").json()["token"] is None, "logged out"


def test_an_action_needs_the_sessions_own_csrf_token_from_this_origin() -> None:
    sessions = auth.Sessions(nobody)
    client = session_app(sessions)
    session_id = sessions.begin("tok")
    good = sessions.open[sessions._key(session_id)].csrf
    assert client.post("/ui/check", data={"csrf": good}).json()["ok"] is False, "no session cookie"
    client.cookies.set(auth.COOKIE, session_id)
    assert client.post("/ui/check", data={"csrf": good}).json()["ok"] is True
    other = sessions.open[sessions._key(sessions.begin("tok"))].csrf
    assert client.post("/ui/check", data={"csrf": other}).json()["ok"] is False, "another session's token"
    assert client.post("/ui/check", data={}).json()["ok"] is False
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Referer": "https://evil.example/page"}):  # fmt: skip
        assert client.post("/ui/check", data={"csrf": good}, headers=headers).json()["ok"] is False, headers
    same = {"Origin": "http://console", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/ui/check", data={"csrf": good}, headers=same).json()["ok"] is True


def test_failed_logins_from_one_address_are_slowed_and_a_success_clears_them() -> None:
    clock = Clock()
    throttle = auth.Throttle(free=5, longest=60, clock=clock)
    for _ in range(5):
        assert throttle.wait("10.0.0.9") == 0
        throttle.failed("10.0.0.9")
    assert throttle.wait("10.0.0.9") == 1.0 and throttle.wait("10.0.0.7") == 0, "per address"
    clock.now += 1
    throttle.failed("10.0.0.9")
    assert throttle.wait("10.0.0.9") == 2.0
    for _ in range(20):
        clock.now += 100
        throttle.failed("10.0.0.9")
    assert throttle.wait("10.0.0.9") == 60.0, "at most a minute"
    throttle.succeeded("10.0.0.9")
    assert throttle.wait("10.0.0.9") == 0


async def test_a_session_is_whoever_the_registry_says_the_token_is_asked_once_per_interval() -> None:
    asked: list[str] = []
    known = {"op": {"actor": "olga", "role": "operator"}, "odd": {"actor": "x", "role": "superuser"}}

    async def whoami(token: str) -> dict[str, str] | None:
        asked.append(token)
        return known.get(token)

    sessions = auth.Sessions(whoami)
    assert await sessions.principal("op") == Principal("olga", "operator")
    assert await sessions.principal("op") == Principal("olga", "operator") and asked == ["op"]
    assert await sessions.principal("nobody") is None
    assert await sessions.principal("odd") is None, "a role the console does not know is no session"
    assert await sessions.principal(None) is None and await sessions.principal("") is None
    assert asked == ["op", "nobody", "odd"]
