"""The whole loop as a user runs it, once for the module: `modelbus demo --stay` (every service its
own process, driven only through Kafka and HTTP: a lifecycle with a canary, drift, alerts and a
retrain), then its traces read back from Jaeger, its metrics from Prometheus, and the console in
a real browser (Debian's chromium, driven by Playwright) with the platform left running. Every
page is photographed into .modelbus/screenshots/ (`make screenshots` runs this module); the demo
must exit 0 when it is stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from shared.runtime.settings import Settings
from tests.support.foreign import console_produce

ROOT = Path(__file__).resolve().parents[2]
MODELBUS = Path(sys.executable).parent / "modelbus"
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / ".modelbus/screenshots"
UI = "http://127.0.0.1:8087/ui"
OPERATOR, VIEWER = "console-op-token", "console-view-token"
TOKENS = f"{OPERATOR}=operator:olga,{VIEWER}=viewer:vic"
SIX = {"trainer", "registry", "evaluator", "deployer", "monitor", "alerter"}
LIFECYCLE_SERVICES = {"trainer", "registry", "evaluator", "deployer"}


@dataclass
class Demo:
    """The demo's output up to the point where it stays up, and what it named."""

    out: str
    model: str
    retrain_trace: str


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")} | {"MODELBUS_API_TOKENS": TOKENS}
    log = ROOT / ".modelbus/logs/console-demo.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(MODELBUS), "demo", "--stay"], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 1500
        while "the platform stays up" not in log.read_text():
            assert process.poll() is None, f"the demo exited {process.returncode}:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(1)
        out = log.read_text()
        model = re.search(r"spec applied: model (\S+),", out)
        retrain = re.search(r"trace of the retrain:\s+([0-9a-f]{32})", out)
        assert model and retrain, out[-3000:]
        yield Demo(out, model.group(1), retrain.group(1))
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, f"the demo exited {process.returncode}:\n{log.read_text()[-4000:]}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is not installed (scripts/bootstrap.sh installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


# ---------------------------------------------------------------- the loop, its trace and its metrics


def test_the_demo_goes_round_the_loop(demo: Demo) -> None:
    out = demo.out
    order = [
        "trained ",
        "registered ",
        "evaluated ",
        "→ promoted",
        "now the world moves",
        "DRIFT ",
        "ALERT ",
        "retrain ",
        "training ",
        "rollout ",
    ]
    at = 0
    for marker in order:  # each stage after the one before it
        found = out.find(marker, at)
        assert found >= 0, f"no {marker!r} after position {at}:\n{out[at : at + 2000]}"
        at = found
    assert "→ canary" in out, "the retrained version goes through a canary"
    assert re.search(r"v2: retrained on the fresh data, (promoted|rolled-back): \S", out)
    assert "[demo] done in" in out


def test_every_label_the_demo_sends_is_joined_and_the_canary_decides_on_them(
    demo: Demo,
) -> None:
    out = demo.out
    sent = re.search(r"traffic: (\d+) answers served, (\d+) labels sent", out)
    joined = re.search(r"labels joined \(the monitor's ledger\): (\d+) of (\d+) received", out)
    assert sent and joined, out[-3000:]
    assert int(sent.group(2)) > 1000
    assert int(joined.group(1)) == int(joined.group(2)) == int(sent.group(2)), (sent.group(0), joined.group(0))
    assert re.search(r"canary +\S+ v2: \w+ \(.*on labels: live_error_rate_increase", out), out[-4000:]


def _spans(settings: Settings, trace_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{settings.trace_query_url}/api/traces/{trace_id}", timeout=10)
    assert answer.status_code == 200, f"trace {trace_id} not found in Jaeger"
    trace = answer.json()["data"][0]
    return [{**s, "service": trace["processes"][s["processID"]]["serviceName"]} for s in trace["spans"]]


def test_one_lifecycle_is_one_trace_with_a_span_from_every_service_on_its_path(
    demo: Demo,
) -> None:
    found = re.search(r"trace of the first lifecycle: ([0-9a-f]{32})", demo.out)
    assert found, demo.out[-3000:]
    spans = _spans(Settings(), found.group(1))
    services = {s["service"] for s in spans}
    assert LIFECYCLE_SERVICES <= services, services
    ids = {s["spanID"] for s in spans}
    roots = [s for s in spans if not any(r["refType"] == "CHILD_OF" for r in s.get("references", []))]
    assert [r["operationName"] for r in roots] == [roots[0]["operationName"]] and roots[0]["service"] == "demo"
    orphans = [
        s["operationName"]
        for s in spans
        for r in s.get("references", [])
        if r["refType"] == "CHILD_OF" and r["spanID"] not in ids
    ]
    assert orphans == [], "every span's parent is in the trace"
    rollout = [s for s in spans if s["service"] == "deployer"]
    assert rollout, "the deployer's decisions are spans of the lifecycle"


def test_the_retrain_is_a_new_trace_linked_to_what_asked_for_it(demo: Demo) -> None:
    found = re.search(r"trace of the retrain:\s+([0-9a-f]{32})", demo.out)
    assert found, demo.out[-3000:]
    spans = _spans(Settings(), found.group(1))
    root = next(
        s for s in spans if s["operationName"].startswith("lifecycle ") and s["operationName"].endswith(" retrain")
    )
    assert any(r["refType"] == "FOLLOWS_FROM" for r in root.get("references", [])), root
    assert {"trainer", "registry", "evaluator", "deployer"} <= {s["service"] for s in spans}


def test_the_monitor_links_its_window_spans_to_the_predictions_they_aggregate(
    demo: Demo,
) -> None:
    settings = Settings()
    found = httpx.get(f"{settings.trace_query_url}/api/traces", params={"service": "monitor", "limit": 500}, timeout=30)
    spans = [s for t in found.json()["data"] for s in t["spans"] if "handle PredictionsLogged" in s["operationName"]]
    linked = [s for s in spans if any(r["refType"] == "FOLLOWS_FROM" for r in s["references"])]
    assert linked, f"{len(spans)} monitor spans over predictions, none linked to serving's"
    target = linked[-1]["references"][0]
    published = httpx.get(f"{settings.trace_query_url}/api/traces/{target['traceID']}", timeout=10).json()["data"][0]
    services = {published["processes"][s["processID"]]["serviceName"] for s in published["spans"]}
    assert "serving" in services


def _prometheus(settings: Settings, path: str, **params: Any) -> Any:
    answer = httpx.get(f"{settings.prometheus_url}/api/v1/{path}", params=params, timeout=30)
    assert answer.status_code == 200, f"{path} {params}: {answer.status_code} {answer.text[:500]}"
    body = answer.json()
    assert body["status"] == "success", body
    return body["data"]


def _series(settings: Settings, query: str, start: float, end: float) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = _prometheus(settings, "query_range", query=query, start=start, end=end, step=15)[
        "result"
    ]
    return found


def test_every_dashboard_panel_draws_from_the_stacks_prometheus_after_the_demo(
    demo: Demo,
) -> None:
    """The stack's Prometheus scrapes the demo's seven processes; every query of the Grafana
    dashboard, as Grafana would send it, answers with at least one series over the last hour."""
    settings = Settings()
    dashboard = json.loads((ROOT / "k8s/base/grafana/modelbus.json").read_text())
    end = time.time()
    served = _series(settings, 'up{service="serving"} == 1', end - 3600, end)
    assert served, "Prometheus never scraped the demo's serving process"
    model = re.search(r"spec applied: model (\S+),", demo.out)
    assert model, demo.out[:2000]
    models = _prometheus(settings, "label/model/values", **{"match[]": "modelbus_serving_predictions_total"})
    assert model.group(1) in models, f"the dashboard's model variable offers {models}"
    empty = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$model", ".*")
            series = _series(settings, expr, end - 3600, end)
            if not any(s["values"] for s in series):
                empty.append(f"{panel['title']}: {target['expr']}")
    assert empty == [], "panels with nothing to draw:\n" + "\n".join(empty)


# ---------------------------------------------------------------- the console


def session(browser: Browser, token: str) -> Page:
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(f"{UI}/")
    assert page.locator("#token").count() == 1, "an unauthenticated visit gets the login page"
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{UI}/")
    return page


def visit(page: Page, path: str, shot: str | None = None) -> None:
    answer = page.goto(f"{UI}{path}")
    assert answer is not None and answer.status == 200, f"{path}: {answer.status if answer else 'no answer'}"
    page.wait_for_load_state("networkidle")
    page.wait_for_function(
        "Array.from(document.querySelectorAll('script[data-figure]'))"
        ".every(s => { const t = document.getElementById(s.dataset.figure); return !t || t.dataset.drawn; })"
    )
    drawn = page.evaluate("Array.from(document.querySelectorAll('[data-drawn]')).map(e => e.dataset.drawn)")
    assert "error" not in drawn, f"{path}: a chart could not be drawn"
    if shot:
        page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)


def api(path: str, token: str = OPERATOR, base: str = "http://127.0.0.1:8080") -> Any:
    answer = httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text[:300]}"
    return answer.json()


def test_the_models_page_lists_the_model_with_its_champion_and_split(demo: Demo, browser: Browser) -> None:
    page = session(browser, VIEWER)
    visit(page, "/", "models")
    row = page.locator(f'tr[data-model="{demo.model}"]')
    assert row.count() == 1
    champion = api(f"/v1/models/{demo.model}")["aliases"]["champion"]
    assert f"v{champion}" in row.inner_text()


def test_the_rollout_chart_has_one_point_per_transition(demo: Demo, browser: Browser) -> None:
    page = session(browser, VIEWER)
    visit(page, f"/models/{demo.model}", "model")
    page.screenshot(path=str(SHOTS / "overview.png"))  # the first screenful, as the README shows it
    transitions = api(f"/v1/models/{demo.model}/history")["rollouts"]
    assert len(transitions) >= 3, "a first promotion, then a canary that ends"
    marks = page.evaluate("document.getElementById('rollout').data.find(t => t.name === 'transitions').x.length")
    assert marks == len(transitions)
    versions = page.evaluate("document.getElementById('rollout').data.map(t => t.name).filter(n => n[0] === 'v')")
    assert versions == [f"v{v}" for v in sorted({t["version"] for r in transitions for t in r["traffic"]})]
    assert page.locator("#transitions tbody tr").count() == len(transitions)


def test_the_drift_chart_shows_the_drifted_features(demo: Demo, browser: Browser) -> None:
    page = session(browser, VIEWER)
    visit(page, f"/models/{demo.model}")
    printed = {f.strip() for line in re.findall(r"DRIFT\s+\S+ v\d+: ([^(]+)\(", demo.out) for f in line.split(",")}
    assert printed, "the demo reported drift"
    drifted = set(
        page.evaluate(
            """(() => {
              const chart = document.getElementById('drift-chart');
              const labels = chart.layout.yaxis.ticktext;
              return chart.data.filter(t => t.type === 'heatmap').flatMap(t =>
                t.y.filter((row, i) => t.text[i].includes('drifted')).map(row => labels[row].split(' ')[1]));
            })()"""
        )
    )
    assert printed <= drifted, (printed, drifted)
    marks = page.evaluate(
        "document.getElementById('drift-chart').data.filter(t => t.type === 'scatter').map(t => t.x.length)"
    )
    assert sum(marks) >= 1, "the windows that drifted as a dataset are marked"


def test_the_model_page_shows_where_every_label_went(demo: Demo, browser: Browser) -> None:
    page = session(browser, VIEWER)
    visit(page, f"/models/{demo.model}")
    heads = page.locator("#ledger thead th").all_text_contents()
    cells = dict(zip(heads, (int(c) for c in page.locator("#ledger tbody td").all_text_contents()), strict=True))
    printed = re.search(r"labels joined \(the monitor's ledger\): (\d+) of (\d+) received", demo.out)
    assert printed, demo.out[-3000:]
    assert cells["labels received"] == cells["joined"] == int(printed.group(2)) > 0, cells
    assert cells["waiting"] == cells["unknown"] == cells["duplicated"] == 0, cells


def test_the_lineage_graph_has_the_chain_and_each_node_opens_a_page(demo: Demo, browser: Browser) -> None:
    page = session(browser, VIEWER)
    visit(page, f"/models/{demo.model}/versions/1", "version")
    kinds = page.evaluate("Array.from(document.querySelectorAll('#lineage a.node')).map(a => a.dataset.kind)")
    assert {"dataset", "run", "version", "evaluation", "rollout", "drift", "alert"} <= set(kinds), kinds
    assert page.locator("#lineage a.node[data-kind=version]").count() == 1
    page.click("#lineage a.node[data-kind=dataset]")
    page.wait_for_load_state("networkidle")
    assert "/ui/datasets/" in page.url and "Dataset" in page.locator("h1").inner_text()


def test_an_operator_replays_a_dead_letter_from_its_page_and_the_replay_is_audited(
    demo: Demo, browser: Browser
) -> None:
    marker = f"console-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"dataset": marker, "not": "a DataArrived"})
    headers = {"ce_type": "DataArrived", "ce_id": marker, "ce_specversion": "1.0"}
    console_produce(Settings(), "modelbus.data-arrived", marker, body, headers)
    page = session(browser, OPERATOR)
    deadline = time.monotonic() + 60
    while True:
        visit(page, "/dead-letters")
        row = page.locator("#letters tr[data-letter]").filter(has_text=marker).first
        if row.count():
            break
        assert time.monotonic() < deadline, "the malformed event never reached the dead-letter page"
        time.sleep(2)
    shown = row.inner_text()
    assert "modelbus.data-arrived[" in shown and f"key {marker}" in shown, "where it came from"
    assert "missing CloudEvents header(s): ce_source" in shown, "why it was refused"
    row.locator("details summary").click()
    assert marker in row.locator("details pre").inner_text(), "its body"
    page.screenshot(path=str(SHOTS / "dead-letters.png"), full_page=True)
    letter = row.get_attribute("data-letter")
    row.locator("button", has_text="Replay").click()
    page.wait_for_load_state("networkidle")
    assert f"replayed {letter} to modelbus.data-arrived" in page.locator(".flash").inner_text()
    audit = api("/v1/audit?action=replay-dead-letter")
    assert any(a["actor"] == "olga" and a["detail"]["letter"] == letter for a in audit), audit


def test_the_trace_page_shows_spans_from_the_six_services(demo: Demo, browser: Browser) -> None:
    page = session(browser, VIEWER)
    visit(page, f"/traces/{demo.retrain_trace}", "trace")
    shown = set(page.evaluate("Array.from(document.querySelectorAll('#waterfall .span')).map(r => r.dataset.service)"))
    assert SIX <= shown, shown
    assert page.locator("a.cause").count() >= 1, "a retrain links to what caused it"
    page.fill("input[type=search]", demo.retrain_trace)
    page.press("input[type=search]", "Enter")
    page.wait_for_url(f"{UI}/traces/{demo.retrain_trace}")


def test_an_operator_acks_an_alert_and_the_alerter_shows_it_acknowledged_and_audited(
    demo: Demo, browser: Browser
) -> None:
    page = session(browser, OPERATOR)
    visit(page, "/alerts", "alerts")
    row = page.locator("#firing tr[data-fingerprint]").filter(has=page.locator("form.ack")).first
    fingerprint = row.get_attribute("data-fingerprint")
    assert fingerprint
    row.locator("form.ack input[name=comment]").fill("looking at the drift")
    row.locator("form.ack button").click()
    page.wait_for_load_state("networkidle")
    assert "acknowledged" in page.locator(".flash").inner_text()
    alert = api(f"/v1/alerts/{fingerprint}", base="http://127.0.0.1:8082")
    assert alert["acked_by"] == "olga" and alert["ack_comment"] == "looking at the drift"
    audit = api(f"/v1/audit?target={fingerprint}", base="http://127.0.0.1:8082")
    assert [(a["actor"], a["action"]) for a in audit] == [("olga", "ack")]


def test_a_viewer_sees_no_ack_button_and_a_forged_post_is_refused(demo: Demo, browser: Browser) -> None:
    page = session(browser, VIEWER)
    visit(page, "/alerts")
    assert page.locator("#firing tr[data-fingerprint]").count() >= 1
    assert page.locator("form.ack").count() == 0 and page.locator("form.silence").count() == 0
    fingerprint = page.locator("#firing tr[data-fingerprint]").first.get_attribute("data-fingerprint")
    as_viewer = page.request.post(f"{UI}/alerts/{fingerprint}/ack", form={"csrf": "forged", "comment": "x"})
    assert as_viewer.status == 403
    operator = session(browser, OPERATOR)
    no_token = operator.request.post(f"{UI}/alerts/{fingerprint}/ack", form={"comment": "from another site"})
    assert no_token.status == 403, "an operator's cookie without the form's CSRF token does nothing"
    audit = api("/v1/audit", base="http://127.0.0.1:8082")
    assert [a for a in audit if a["detail"].get("comment") in ("x", "from another site")] == []
    stranger = browser.new_context().new_page()
    stranger.goto(f"{UI}/models/{demo.model}")
    assert stranger.locator("#token").count() == 1 and stranger.locator("#versions").count() == 0
    assert stranger.request.get(f"{UI}/alerts").status == 401
