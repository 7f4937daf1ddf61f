"""The whole loop as a user runs it: `modelbus demo` (every service its own process, driven only
through Kafka and HTTP), then its trace read back from Jaeger."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MODELBUS = Path(sys.executable).parent / "modelbus"
LIFECYCLE_SERVICES = {"trainer", "registry", "evaluator", "deployer"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """One `modelbus demo`, shared by the tests of this module."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_")}
    return subprocess.run(
        [str(MODELBUS), "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500, check=False
    )


def test_the_demo_goes_round_the_loop_and_exits_0(demo_run: subprocess.CompletedProcess[str]) -> None:
    out = demo_run.stdout
    assert demo_run.returncode == 0, out[-4000:] + demo_run.stderr[-2000:]
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
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    out = demo_run.stdout
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
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    found = re.search(r"trace of the first lifecycle: ([0-9a-f]{32})", demo_run.stdout)
    assert found, demo_run.stdout[-3000:]
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


def test_the_retrain_is_a_new_trace_linked_to_what_asked_for_it(demo_run: subprocess.CompletedProcess[str]) -> None:
    found = re.search(r"trace of the retrain:\s+([0-9a-f]{32})", demo_run.stdout)
    assert found, demo_run.stdout[-3000:]
    spans = _spans(Settings(), found.group(1))
    root = next(
        s for s in spans if s["operationName"].startswith("lifecycle ") and s["operationName"].endswith(" retrain")
    )
    assert any(r["refType"] == "FOLLOWS_FROM" for r in root.get("references", [])), root
    assert {"trainer", "registry", "evaluator", "deployer"} <= {s["service"] for s in spans}


def test_the_monitor_links_its_window_spans_to_the_predictions_they_aggregate(
    demo_run: subprocess.CompletedProcess[str],
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
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    """The stack's Prometheus scrapes the demo's seven processes; every query of the Grafana
    dashboard, as Grafana would send it, answers with at least one series over the last hour."""
    settings = Settings()
    dashboard = json.loads((ROOT / "k8s/base/grafana/modelbus.json").read_text())
    end = time.time()
    served = _series(settings, 'up{service="serving"} == 1', end - 3600, end)
    assert served, "Prometheus never scraped the demo's serving process"
    model = re.search(r"spec applied: model (\S+),", demo_run.stdout)
    assert model, demo_run.stdout[:2000]
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
