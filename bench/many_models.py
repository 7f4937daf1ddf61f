"""The serving benchmark's many-models run: `count` logistic-regression models in one serving
process, `live` of them with a rollout (pinned, loaded up front), the rest registered only and
loaded on their first request by name (V2 `/versions/1/infer`: a cold load each). Reports resident
memory, warm p50/p99 with requests spread over the live models, cold-load p50/p99 and evictions.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import free_port, rss_bytes, say, serving_platform, table, vegeta
from bench.peers import v2_body
from services.trainer import fit
from shared.contract.events import ArtifactRef, ModelEvaluated, ModelRegistered, ModelSpecApplied
from shared.contract.spec import ModelSpec
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


async def publish(
    settings: Settings, spec: ModelSpec, outcome: fit.Outcome, refs: list[ArtifactRef], names: list[str], live: int
) -> None:
    """Every model registered (the same fitted artifacts); the first `live` also approved with a spec."""
    bus = Bus(settings.model_copy(update={"service_name": "bench-many"}))
    await bus.start()
    try:
        for index, name in enumerate(names):
            if index < live:
                own = spec.model_copy(update={"model": name, "dataset": name})
                await bus.publish(
                    ModelSpecApplied(
                        model=name, revision=1, spec=own, spec_yaml="-", spec_sha256="0" * 64, applied_by="bench"
                    )
                )
            await bus.publish(
                ModelRegistered(
                    model=name, version=1, run_id=outcome.run_id, dataset_version="v1", task=spec.task,
                    artifacts=refs, metrics=outcome.metrics,
                )
            )  # fmt: skip
            if index < live:
                await bus.publish(
                    ModelEvaluated(
                        model=name, version=1, champion_version=None, passed=True, decision="approved", gates=[],
                        metrics=outcome.metrics, test_rows=0,
                    )
                )  # fmt: skip
    finally:
        await bus.stop()


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.split()[-1])
    return total


def run(
    settings: Settings,
    spec: ModelSpec,
    outcome: fit.Outcome,
    refs: list[ArtifactRef],
    row: dict[str, Any],
    *,
    count: int,
    live: int,
    concurrency: list[int],
    seconds: float,
    folder: Path,
    suffix: str,
) -> dict[str, Any]:
    names = [f"bench-many-{suffix}-{i:04d}" for i in range(count)]
    say(f"[bench] many models: registering {count} logistic regressions, {live} of them live …")
    asyncio.run(publish(settings, spec, outcome, refs, names, live))
    port = free_port()
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_SERVING_PORT": str(port),
        "MODELBUS_SERVING_MODELS": ",".join(names),
        "MODELBUS_LOG_LEVEL": "WARNING",
        "MODELBUS_OTLP_ENDPOINT": "",
    }
    began = time.monotonic()
    with serving_platform(
        env,
        folder,
        lambda models: len(set(models) & set(names)) >= live,
        timeout=600,
        what=f"the {live} live models",
        logs="many-",
    ) as (base, processes):
        say(f"[bench]   {live} live models loaded in {time.monotonic() - began:.0f} s")
        body = json.dumps({"instance": row})
        targets = [(f"{base}/v1/models/{n}:predict", body) for n in names[:live]]
        vegeta(targets[0][0], concurrency=8, seconds=2, body=body, folder=folder / "many-load", more=targets[1:])
        warm = {}
        for c in concurrency:
            warm[c] = vegeta(
                targets[0][0], concurrency=c, seconds=seconds, body=body, folder=folder / "many-load", more=targets[1:]
            )
            rate, p50, p99 = warm[c]["ops_per_s"], warm[c]["p50_ms"], warm[c]["p99_ms"]
            say(f"[bench]   warm over {live} models c={c}: {rate:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        cold: list[float] = []
        infer = v2_body(row)
        with httpx.Client(timeout=60) as http:
            for index, name in enumerate(names[live:]):
                started = time.perf_counter()
                answer = http.post(
                    f"{base}/v2/models/{name}/versions/1/infer",
                    content=infer,
                    headers={"content-type": "application/json"},
                )
                cold.append((time.perf_counter() - started) * 1000)
                if answer.status_code != 200:
                    raise SystemExit(f"{name}@1 by name: {answer.status_code} {answer.text[:200]}")
                if (index + 1) % 100 == 0:
                    say(
                        f"[bench]   cold loads: {index + 1}/{count - live}, p50 so far {statistics.median(cold):.0f} ms"
                    )
        cold.sort()
        text = httpx.get(f"{base}/metrics").text
        found: dict[str, Any] = {
            "models": count,
            "live": live,
            "warm": warm,
            "cold_p50_ms": statistics.median(cold),
            "cold_p99_ms": cold[int(len(cold) * 0.99)],
            "rss_bytes": rss_bytes(processes["serving"].pid),
            "resident_bytes": metric(text, "modelbus_serving_resident_bytes"),
            "budget_bytes": metric(text, "modelbus_serving_memory_budget_bytes"),
            "evictions": metric(text, "modelbus_serving_evictions_total"),
            "loads": metric(text, "modelbus_serving_loads_total"),
        }
        say(
            f"[bench]   cold load p50 {found['cold_p50_ms']:.0f} ms, p99 {found['cold_p99_ms']:.0f} ms; "
            f"RSS {found['rss_bytes'] / 2**20:.0f} MiB, {found['loads']:.0f} loads, {found['evictions']:.0f} evictions"
        )
        return found


def report(found: dict[str, Any]) -> dict[str, Any]:
    """The table: memory and loads, warm load over the live models, cold loads by name."""
    rows = [
        [f"resident versions after {found['loads']:,.0f} loads",
         f"{found['resident_bytes'] / 2**20:,.0f} MiB of the {found['budget_bytes'] / 2**30:g} GiB budget "
         f"({found['evictions']:,.0f} evictions)"],
        ["serving process RSS", f"{found['rss_bytes'] / 2**20:,.0f} MiB"],
        *([f"warm, over the {found['live']} live models, c={c}",
           f"{run['ops_per_s']:,.0f} req/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms"]
          for c, run in found["warm"].items()),
        ["cold load (first request by name: download, digest check, load)",
         f"p50 {found['cold_p50_ms']:,.0f} ms, p99 {found['cold_p99_ms']:,.0f} ms"],
    ]  # fmt: skip
    return table(f"{found['models']:,} models in one serving process, {found['live']} with a rollout",
                 ["measure", "value"], rows)  # fmt: skip
