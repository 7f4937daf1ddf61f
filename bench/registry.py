"""Registry benchmark: modelbus against MLflow's model registry, same machine, same PostgreSQL.

    .venv/bin/python -m bench.registry [--versions 1000] [--resolves 5000] [--no-mlflow]

Needs the local stack (`modelbus stack up`). Measures:
  1. registering N versions of one model through events: ModelTrained published to Kafka, until
     the N-th ModelRegistered is on the bus (one model = one partition: the hardest case);
  2. resolving NAME@champion M times through the HTTP API, at concurrency 1 and 8, with `hey`
     (installed with `go install` into .modelbus/bench/bin when missing);
and the same two on MLflow (`mlflow server` in its own virtualenv under .modelbus/bench, its
tables in schema `mlflow` of the same PostgreSQL database, default server options): versions
created through its REST API, aliases read through `registered-models/alias`.
Prints a table and writes JSON (default bench/results/registry.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import BENCH, free_port, hey, publish, say, table, wait_http
from shared.contract.envelope import decode
from shared.contract.events import ModelRegistered, ModelTrained, RolloutChanged
from shared.runtime.broker import aiokafka_options, drop_topics, ensure_topics
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings
from tests.support.venvs import mlflow_python

ROOT = Path(__file__).resolve().parents[1]

TOKEN = "bench-viewer-token"  # noqa: S105 - the viewer token of the throwaway registry the benchmark starts


# ---------------------------------------------------------------- modelbus


def trained(model: str, run: str) -> ModelTrained:
    example = json.loads((ROOT / "schemas/examples/model-trained.json").read_text())
    return ModelTrained.model_validate({**example, "model": model, "run_id": run, "spec_revision": 1})


async def register_through_events(settings: Settings, model: str, count: int) -> dict[str, float]:
    """Publish `count` ModelTrained; time until the last ModelRegistered of `model` is on the bus."""
    consumer = AIOKafkaConsumer(
        settings.topic("model-registered"), auto_offset_reset="earliest", **aiokafka_options(settings)
    )
    await consumer.start()
    bus = Bus(settings.model_copy(update={"service_name": "bench"}))
    await bus.start()
    try:
        events = [trained(model, f"{model}-run-{i}") for i in range(count)]
        started = time.perf_counter()
        for start in range(0, count, 200):
            await asyncio.gather(*(bus.publish(e) for e in events[start : start + 200]))
        published = time.perf_counter() - started
        seen: set[int] = set()
        last_report = 0
        while len(seen) < count:
            batch = await consumer.getmany(timeout_ms=1000)
            for record in (r for rs in batch.values() for r in rs):
                event = decode(record.value, list(record.headers or ())).event
                if isinstance(event, ModelRegistered) and event.model == model:
                    seen.add(event.version)
            if len(seen) - last_report >= max(count // 5, 1):
                last_report = len(seen)
                say(f"[bench] modelbus: {len(seen)}/{count} versions registered")
            if time.perf_counter() - started > 600:
                raise SystemExit(f"only {len(seen)} of {count} versions registered after 600 s")
        elapsed = time.perf_counter() - started
    finally:
        await bus.stop()
        await consumer.stop()
    assert seen == set(range(1, count + 1)), "versions must be exactly 1..N"
    return {"versions": count, "seconds": elapsed, "ops_per_s": count / elapsed, "publish_seconds": published}


async def set_champion(settings: Settings, model: str, api: str) -> None:
    example = json.loads((ROOT / "schemas/examples/rollout-changed.json").read_text())
    event = RolloutChanged.model_validate(
        {**example, "model": model, "candidate_version": 1, "stable_version": None, "to_state": "promoted"}
    )
    bus = Bus(settings.model_copy(update={"service_name": "bench"}))
    await bus.start()
    try:
        await bus.publish(event)
    finally:
        await bus.stop()
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        while (await http.get(f"{api}/v1/models/{model}/versions/champion")).status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the champion alias never appeared")
            await asyncio.sleep(0.2)


def bench_modelbus(versions: int, resolves: int) -> dict[str, Any]:
    base = Settings()
    settings = base.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}"})
    asyncio.run(ensure_topics(settings))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_API_TOKENS": f"{TOKEN}=viewer:bench",
        "MODELBUS_REGISTRY_PORT": str(port),
        "MODELBUS_OTLP_ENDPOINT": "",
        "MODELBUS_LOG_LEVEL": "WARNING",
    }
    say(f"[bench] modelbus: starting the registry on {api} (topic prefix {settings.topic_prefix})")
    process = subprocess.Popen([sys.executable, "-m", "services.registry"], cwd=ROOT, env=env)
    model = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        wait_http(f"{api}/readyz", timeout=90, what="the registry", process=process)
        registration = asyncio.run(register_through_events(settings, model, versions))
        asyncio.run(set_champion(settings, model, api))
        url = f"{api}/v1/models/{model}/versions/champion"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        hey(url, requests=min(resolves, 500), concurrency=8, headers=headers)  # warm-up
        results = {
            "register": registration,
            "resolve_c1": hey(url, requests=resolves, concurrency=1, headers=headers),
            "resolve_c8": hey(url, requests=resolves, concurrency=8, headers=headers),
        }
    finally:
        process.terminate()
        process.wait(timeout=30)
        asyncio.run(drop_topics(settings))
    return results


# ---------------------------------------------------------------- MLflow


async def _fresh_schema(settings: Settings) -> None:
    engine = create_async_engine(settings.database_url)
    async with engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA IF EXISTS mlflow CASCADE"))
        await connection.execute(text("CREATE SCHEMA mlflow"))
    await engine.dispose()


def bench_mlflow(versions: int, resolves: int) -> dict[str, Any]:
    settings = Settings()
    python = mlflow_python()
    version = subprocess.run(
        [str(python), "-c", "import mlflow; print(mlflow.__version__)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    asyncio.run(_fresh_schema(settings))
    store = settings.database_url.replace("+asyncpg", "+psycopg2", 1) + "?options=-csearch_path%3Dmlflow"
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    artifacts = BENCH / "mlflow-artifacts"
    say(f"[bench] MLflow {version}: starting `mlflow server` on {api} (backend: schema mlflow of the same database)")
    process = subprocess.Popen(
        [
            str(python.parent / "mlflow"),
            "server",
            "--backend-store-uri",
            store,
            "--default-artifact-root",
            artifacts.as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=BENCH,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"{api}/health", timeout=180, what="mlflow server", process=process)
        name = f"bench-{uuid.uuid4().hex[:6]}"
        with httpx.Client(base_url=f"{api}/api/2.0/mlflow", timeout=30) as http:
            http.post("/registered-models/create", json={"name": name}).raise_for_status()
            started = time.perf_counter()
            for i in range(versions):
                http.post(
                    "/model-versions/create", json={"name": name, "source": f"s3://bench-models/run-{i}/model"}
                ).raise_for_status()
                if (i + 1) % max(versions // 5, 1) == 0:
                    say(f"[bench] MLflow: {i + 1}/{versions} versions created")
            elapsed = time.perf_counter() - started
            http.post(
                "/registered-models/alias", json={"name": name, "alias": "champion", "version": "1"}
            ).raise_for_status()
        url = f"{api}/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion"
        hey(url, requests=min(resolves, 100), concurrency=8, headers={})  # warm-up
        return {
            "version": version,
            "register": {"versions": versions, "seconds": elapsed, "ops_per_s": versions / elapsed},
            "resolve_c1": hey(url, requests=resolves, concurrency=1, headers={}),
            "resolve_c8": hey(url, requests=resolves, concurrency=8, headers={}),
        }
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


# ---------------------------------------------------------------- report


def report(results: dict[str, Any]) -> list[dict[str, Any]]:
    ours, theirs = results["modelbus"], results.get("mlflow")
    measures = [
        ("register versions (events / REST), ops/s", "register", "ops_per_s"),
        ("resolve NAME@champion c=1, ops/s", "resolve_c1", "ops_per_s"),
        ("resolve NAME@champion c=1, p50 ms", "resolve_c1", "p50_ms"),
        ("resolve NAME@champion c=1, p99 ms", "resolve_c1", "p99_ms"),
        ("resolve NAME@champion c=8, ops/s", "resolve_c8", "ops_per_s"),
        ("resolve NAME@champion c=8, p50 ms", "resolve_c8", "p50_ms"),
        ("resolve NAME@champion c=8, p99 ms", "resolve_c8", "p99_ms"),
    ]
    rows: list[list[Any]] = []
    for label, part, key in measures:
        mine = ours[part][key]
        other = theirs[part][key] if theirs else None
        ratio = (mine / other if key == "ops_per_s" else other / mine) if other else None
        rows.append([label, round(mine, 1), round(other, 1) if other else "-", f"{ratio:.1f}x" if ratio else "-"])
    return [
        table(
            "The registry against MLflow's",
            ["measure", "modelbus", "MLflow", "ratio"],
            rows,
            "ratio: how many times better modelbus is; for latencies, MLflow's divided by modelbus's",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=1000, help="versions registered through events")
    parser.add_argument("--resolves", type=int, default=5000, help="alias resolutions per concurrency level")
    parser.add_argument("--mlflow-versions", type=int, default=300, help="versions created in MLflow")
    parser.add_argument("--mlflow-resolves", type=int, default=1000, help="MLflow alias reads per concurrency level")
    parser.add_argument("--no-mlflow", action="store_true", help="only measure modelbus")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "registry.json")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "registry",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "parameters": vars(args) | {"out": str(args.out)},
        "modelbus": bench_modelbus(args.versions, args.resolves),
    }
    if not args.no_mlflow:
        results["mlflow"] = bench_mlflow(args.mlflow_versions, args.mlflow_resolves)
        results["ratios"] = {
            "register_ops": results["modelbus"]["register"]["ops_per_s"] / results["mlflow"]["register"]["ops_per_s"],
            "resolve_c1_ops": results["modelbus"]["resolve_c1"]["ops_per_s"]
            / results["mlflow"]["resolve_c1"]["ops_per_s"],
            "resolve_c8_ops": results["modelbus"]["resolve_c8"]["ops_per_s"]
            / results["mlflow"]["resolve_c8"]["ops_per_s"],
        }
    publish(args.out, "registry", "Registry: modelbus against MLflow's model registry", report(results), results)


if __name__ == "__main__":
    main()
