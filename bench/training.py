"""From DataArrived to ModelEvaluated: where the time goes; and the gradient-boosting families and
model imports side by side.

    .venv/bin/python -m bench.training [--runs 3] [--rows 5000]
    .venv/bin/python -m bench.training --families [--family-rows 50000] [--seconds 10]
    .venv/bin/python -m bench.training --imports [--repeat 3]

Needs the local stack (`modelbus stack up`). Starts the registry, trainer and evaluator as separate
processes (fresh topic prefix), applies the example spec, and for each run uploads a fresh example
dataset to the S3 server and publishes DataArrived. The time until ModelEvaluated is on the bus is
split into training (the trainer's fit, from its manifest), evaluation (the evaluator's own
timing) and everything else (the bus, the outbox, downloads and uploads, registration).
Prints a table and writes JSON (default bench/results/training.json).

`--families`: XGBoost, LightGBM and HistGradientBoosting on the same 50,000-row example dataset,
each fitted by the trainer's code: fit seconds (the pipeline's fit alone, and the whole run with
profile, calibration and export), ONNX parity (max absolute difference of class probabilities,
ONNX against the native pipeline, on the 10,000 test rows; or why there is no ONNX), and serving
p50 at concurrency 1 through modelbus serving (deployer and serving as processes, vegeta).
Writes bench/results/training-families.json.

`--imports`: a 100-tree random forest trained in a notebook script (the benchmark's MLflow
virtualenv) and saved as skops, as ONNX and as an MLflow model, each imported through the
registry's HTTP route (a process) `--repeat` times: the request's wall time and the registry's own
check time. Writes bench/results/training-imports.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import free_port, publish, say, table
from shared.contract.envelope import decode
from shared.contract.events import DataArrived, ModelEvaluated, ModelTrained
from shared.ops.example_data import write_churn
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.broker import aiokafka_options, ensure_topics
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

TOKEN = "bench-admin-token"  # noqa: S105 - the admin token of the throwaway registry the benchmark starts


async def one_run(settings: Settings, model: str, rows: int, seed: int, folder: Path) -> dict[str, Any]:
    """Upload data, publish DataArrived, wait for ModelEvaluated; the time split."""
    data = write_churn(folder / f"{model}-{seed}.csv", rows=rows, seed=seed)
    stored = await asyncio.to_thread(ArtifactStore(settings).put_file, f"datasets/{model}/{seed}.csv", data)
    consumer = AIOKafkaConsumer(
        settings.topic("model-trained"),
        settings.topic("model-evaluated"),
        auto_offset_reset="latest",
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
        **aiokafka_options(settings),
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=2000)  # joins the group and takes its partitions at their ends
    bus = Bus(settings.model_copy(update={"service_name": "bench"}))
    await bus.start()
    trained: ModelTrained | None = None
    try:
        started = time.perf_counter()
        await bus.publish(
            DataArrived(dataset=model, version=f"v{seed}", uri=stored.uri, sha256=stored.sha256, row_count=rows)
        )
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for record in (r for rs in batch.values() for r in rs):
                event = decode(record.value, list(record.headers or ())).event
                if isinstance(event, ModelTrained) and event.model == model:
                    trained = event
                if isinstance(event, ModelEvaluated) and event.model == model and trained is not None:
                    total = time.perf_counter() - started
                    evaluation = await _evaluation_seconds(settings, model, event.version)
                    return {
                        "total_s": total,
                        "training_s": trained.training_seconds,
                        "evaluation_s": evaluation,
                        "else_s": total - trained.training_seconds - evaluation,
                        "decision": 1.0 if event.decision == "approved" else 0.0,
                        "roc_auc": event.metrics.get("roc_auc", float("nan")),
                        "gates": [g.model_dump() for g in event.gates],
                        "metrics": event.metrics,
                    }
            if time.perf_counter() - started > 600:
                raise SystemExit("no ModelEvaluated within 600 s")
    finally:
        await bus.stop()
        await consumer.stop()


async def _evaluation_seconds(settings: Settings, model: str, version: int) -> float:
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            value = await connection.scalar(
                text("SELECT seconds FROM evaluator_results WHERE model = :m AND version = :v"),
                {"m": model, "v": version},
            )
    finally:
        await engine.dispose()
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "training.json")
    parser.add_argument("--families", action="store_true", help="XGBoost, LightGBM, HistGradientBoosting")
    parser.add_argument("--family-rows", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=10, help="--families: load per model, in seconds")
    parser.add_argument("--imports", action="store_true", help="import a 100-tree forest from each format")
    parser.add_argument("--repeat", type=int, default=3, help="--imports: imports per format")
    args = parser.parse_args()
    if args.families or args.imports:
        from bench.byom import bench_families, bench_imports

        if args.families:
            bench_families(rows=args.family_rows, seconds=args.seconds)
        if args.imports:
            bench_imports(repeat=args.repeat)
        return
    settings = Settings().model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}"})
    asyncio.run(ensure_topics(settings))
    port = free_port()
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_API_TOKENS": f"{TOKEN}=admin:bench",
        "MODELBUS_REGISTRY_PORT": str(port),
        "MODELBUS_LOG_LEVEL": "WARNING",
    }
    logs = Path(tempfile.mkdtemp(prefix="modelbus-bench-"))
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env, stderr=(logs / f"{name}.log").open("w")
        )
        for name in ("registry", "trainer", "evaluator")
    ]
    say(f"[bench] registry, trainer and evaluator started (prefix {settings.topic_prefix}, logs in {logs})")
    model = f"bench-churn-{uuid.uuid4().hex[:6]}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the registry did not become ready")
            time.sleep(0.5)
        spec = (ROOT / "schemas/examples/model-spec.yaml").read_text()
        spec = spec.replace("model: churn", f"model: {model}").replace("dataset: churn", f"dataset: {model}")
        httpx.post(
            f"http://127.0.0.1:{port}/v1/specs",
            json={"spec_yaml": spec},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        ).raise_for_status()
        time.sleep(5)  # the trainer and evaluator read the spec and warm up
        runs = []
        for run in range(args.runs):
            result = asyncio.run(one_run(settings, model, args.rows, 100 + run, logs))
            runs.append(result)
            say(
                f"[bench] run {run + 1}/{args.runs}: {result['total_s']:.2f} s "
                f"(training {result['training_s']:.2f}, evaluation {result['evaluation_s']:.2f}, "
                f"else {result['else_s']:.2f})"
            )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    keys = ("total_s", "training_s", "evaluation_s", "else_s")
    median = {key: statistics.median(r[key] for r in runs) for key in keys}
    labels = ("total", "training (fit)", "evaluation", "everything else")
    stages = table(
        "From DataArrived to ModelEvaluated",
        ["DataArrived → ModelEvaluated", "median s", "min s", "max s"],
        [[label, round(median[key], 2), round(min(r[key] for r in runs), 2), round(max(r[key] for r in runs), 2)]
         for key, label in zip(keys, labels, strict=True)],
        f"{args.rows:,} rows, {args.runs} runs; approved {sum(r['decision'] for r in runs):.0f} of {args.runs}.",
    )  # fmt: skip
    last = runs[-1]
    gates = table(
        "The last run's gates",
        ["gate", "value", "", "threshold", "passed"],
        [[g["name"], "-" if g["value"] is None else f"{g['value']:.4g}", g["comparator"], f"{g['threshold']:.4g}",
          "yes" if g["passed"] else "no"] for g in last["gates"]],
        "Metrics on the test split: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(last["metrics"].items())),
    )  # fmt: skip
    data = {"parameters": {"runs": args.runs, "rows": args.rows}, "runs": runs, "median": median}
    publish(args.out, "training", "Training: from new data to a decision", [stages, gates], data)


if __name__ == "__main__":
    main()
