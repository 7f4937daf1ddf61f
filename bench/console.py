"""Console page-load benchmark: how long each page takes with a big model in the database.

    .venv/bin/python -m bench.console [--versions 200] [--windows 10000] [--runs 7]

Needs the local stack (`modelbus stack up`) and Debian's chromium. Seeds one model with
`--versions` versions (through the registry's store, as its handlers write them), one rollout
transition per version, and `--windows` closed drift windows of five features in the monitor's
table; starts the registry, the monitor, the alerter and the console as processes on free ports; then, per page, times
  1. the server: the HTML answer, over HTTP with the session cookie (median and p95 of --runs);
  2. the browser: a navigation in chromium until every chart is drawn (median and p95), and the
     bytes it transferred, with a cold cache (the first visit) and a warm one.
Prints a table and writes JSON (default bench/results/console.json).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import BENCH, free_port, publish, say, table, wait_http
from services.monitor.tables import WindowRow
from services.registry import handlers, store
from shared.contract.events import ModelTrained, RolloutChanged
from shared.ops import credentials
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

TOKEN = "bench-console-token"  # noqa: S105 - the viewer token of the throwaway processes this benchmark starts
FEATURES = ("tenure_months", "monthly_charges", "support_calls", "plan", "region")
CHROMIUM = "/usr/bin/chromium"
DRAWN = (  # every chart of the page drawn (console.js marks each)
    "Array.from(document.querySelectorAll('script[data-figure]'))"
    ".every(s => { const t = document.getElementById(s.dataset.figure); return !t || t.dataset.drawn; })"
)


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / f"schemas/examples/{name}.json").read_text())
    return loaded


async def seed(settings: Settings, model: str, versions: int, windows: int) -> None:
    """The model's versions and transitions in the registry, its windows in the monitor."""
    engine = make_engine(settings)
    sessions = make_sessions(engine)
    trained, changed = example("model-trained"), example("rollout-changed")
    began = datetime.now(UTC) - timedelta(days=30)
    for version in range(1, versions + 1):
        event = ModelTrained.model_validate(
            {**trained, "model": model, "run_id": f"run-{model}-{version}", "spec_revision": 1}
        )
        rollout = RolloutChanged.model_validate(
            {
                **changed,
                "model": model,
                "rollout_id": f"ro-{model}-{version}",
                "candidate_version": version,
                "stable_version": version - 1 or None,
                "from_state": "canary",
                "to_state": "promoted",
                "traffic": [{"version": version, "percent": 100.0, "role": "stable"}],
            }
        )
        async with sessions() as session, session.begin():
            kept = store.SqlStore(session)
            await kept.register_version(event, event_id=uuid.uuid4().hex)
            await handlers.record_rollout(kept, rollout, event_id=uuid.uuid4().hex)
        if version % 50 == 0:
            say(f"[bench] {version}/{versions} versions registered")
    rng = np.random.default_rng(7)
    step = timedelta(minutes=4)
    rows = []
    for index in range(windows):
        scores = rng.uniform(0, 0.4, len(FEATURES))
        p_values = np.exp(-scores * 40)
        features = [
            {
                "feature": f,
                "test": "ks",
                "score": float(s),
                "p_value": float(p),
                "threshold": 0.05,
                "drifted": bool(p < 0.05),
            }
            for f, s, p in zip(FEATURES, scores, p_values, strict=True)
        ]
        drifted = float(np.mean(p_values < 0.05))
        start = began + index * step
        rows.append(
            WindowRow(
                window_id=f"win-{model}-{index}",
                model=model,
                version=versions - (windows - 1 - index) * 3 // windows,
                started_at=start,
                ended_at=start + step,
                rows=1000,
                drifted_share=drifted,
                dataset_drift=drifted >= 0.5,
                result={"features": features, "estimated": {"accuracy": float(0.8 - scores.mean() / 4)}, "summary": {}},
            )
        )
    async with sessions() as session, session.begin():
        session.add_all(rows)
    say(f"[bench] {windows} drift windows written")
    await engine.dispose()


@contextmanager
def processes(env: dict[str, str], folder: Path) -> Any:
    """The registry (with the console), the monitor and the alerter, until the block ends."""
    modules = {"registry": "services.registry", "monitor": "services.monitor", "alerter": "services.alerter",
               "console": "shared.ops.console"}  # fmt: skip
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=env, stderr=(folder / f"{name}.log").open("w")
        )
        for name, module in modules.items()
    }
    try:
        for name, port in (("registry", "MODELBUS_REGISTRY_PORT"), ("monitor", "MODELBUS_HEALTH_PORT"),
                           ("alerter", "MODELBUS_ALERTER_PORT"), ("console", "MODELBUS_CONSOLE_PORT")):  # fmt: skip
            wait_http(f"http://127.0.0.1:{env[port]}/readyz", timeout=60, what=name, process=started[name])
        yield
    finally:
        for process in started.values():
            process.terminate()
        for process in started.values():
            process.wait(timeout=30)


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median_ms": statistics.median(ordered) * 1000, "p95_ms": ordered[int(0.95 * (len(ordered) - 1))] * 1000}


def measure(base: str, pages: dict[str, str], runs: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=30) as http:
        # A session as a person gets one: the login form with the token (the cookie names the session).
        login = http.post("/ui/login", data={"token": TOKEN, "next": "/ui/"}, headers={"Origin": base})
        assert login.status_code == 303 and "modelbus_console" in http.cookies, f"login: {login.status_code}"
        session = http.cookies["modelbus_console"]
        for name, path in pages.items():
            timings = []
            for _ in range(runs):
                began = time.perf_counter()
                answer = http.get(path)
                timings.append(time.perf_counter() - began)
                assert answer.status_code == 200, f"{path}: {answer.status_code}"
            results[name] = {
                "path": path,
                "server": quantiles(timings),
                "html_bytes": len(answer.content),
                "html_gzip_bytes": len(gzip.compress(answer.content)),
            }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context()
        context.add_cookies([{"name": "modelbus_console", "value": session, "url": f"{base}/ui"}])
        page = context.new_page()
        transferred = {"bytes": 0.0}
        network = context.new_cdp_session(page)
        network.send("Network.enable")

        def finished(event: dict[str, Any]) -> None:  # bytes over the wire; 0 when from the cache
            transferred["bytes"] += event["encodedDataLength"]

        network.on("Network.loadingFinished", finished)
        for name, path in pages.items():
            loads, sizes = [], []
            for run in range(runs + 1):
                transferred["bytes"] = 0
                began = time.perf_counter()
                page.goto(f"{base}{path}")
                page.wait_for_function(DRAWN)
                elapsed = time.perf_counter() - began
                sizes.append(transferred["bytes"])
                if run:  # the first visit of the first page fills the cache: kept apart as cold
                    loads.append(elapsed)
                else:
                    results[name]["cold_ms"] = elapsed * 1000
            results[name]["browser"] = quantiles(loads)
            results[name]["cold_transfer_bytes"] = sizes[0]
            results[name]["warm_transfer_bytes"] = statistics.median(sizes[1:])
        browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/console.json")
    args = parser.parse_args()
    settings = Settings()
    model = f"bench-console-{uuid.uuid4().hex[:6]}"
    say(f"[bench] seeding {model}: {args.versions} versions, {args.windows} windows")
    asyncio.run(seed(settings, model, args.versions, args.windows))
    folder = BENCH / "console"
    folder.mkdir(parents=True, exist_ok=True)
    ports = {name: str(free_port()) for name in ("registry", "monitor", "alerter", "console")}
    env = {
        # Nothing of the caller's platform but the stack's credentials (adopted by bench.common).
        **{k: v for k, v in os.environ.items() if not k.startswith("MODELBUS_") or k in credentials.VARIABLES},
        "MODELBUS_TOPIC_PREFIX": f"bench-console-{uuid.uuid4().hex[:6]}",
        "MODELBUS_API_TOKENS": f"{TOKEN}=viewer:bench",
        "MODELBUS_OTLP_ENDPOINT": "",
        "MODELBUS_REGISTRY_PORT": ports["registry"],
        "MODELBUS_HEALTH_PORT": ports["monitor"],
        "MODELBUS_ALERTER_PORT": ports["alerter"],
        "MODELBUS_MONITOR_URL": f"http://127.0.0.1:{ports['monitor']}",
        "MODELBUS_ALERTER_URL": f"http://127.0.0.1:{ports['alerter']}",
        "MODELBUS_CONSOLE_PORT": ports["console"],
        "MODELBUS_API_URL": f"http://127.0.0.1:{ports['registry']}",
    }
    base = f"http://127.0.0.1:{ports['console']}"
    pages = {
        "models": "/ui/",
        "model": f"/ui/models/{model}",
        "version": f"/ui/models/{model}/versions/{args.versions}",
        "alerts": "/ui/alerts",
    }
    with processes(env, folder):
        say("[bench] timing the pages")
        results = measure(base, pages, args.runs)
    pages_table = table(
        f"Console pages, {args.versions:,} versions and {args.windows:,} drift windows in the database",
        ["page", "server p50 ms", "server p95 ms", "browser p50 ms", "browser p95 ms", "cold ms", "HTML KB",
         "cold transfer KB", "warm transfer KB"],
        [[name, round(f["server"]["median_ms"]), round(f["server"]["p95_ms"]), round(f["browser"]["median_ms"]),
          round(f["browser"]["p95_ms"]), round(f["cold_ms"]), round(f["html_bytes"] / 1024),
          round(f["cold_transfer_bytes"] / 1024), round(f["warm_transfer_bytes"] / 1024)]
         for name, f in results.items()],
        f"Server: the HTML answer over HTTP with the session cookie; browser: chromium until the page is drawn. "
        f"Median and p95 of {args.runs} runs; cold: the first load with an empty cache.",
    )  # fmt: skip
    data = {"versions": args.versions, "windows": args.windows, "runs": args.runs, "pages": results}
    publish(args.out, "console", "Console: page loads with a big model", [pages_table], data)


if __name__ == "__main__":
    main()
