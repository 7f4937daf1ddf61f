"""What authenticating every client costs: the lifecycle and serving benchmarks on the secured local
stack (SASL/SCRAM-SHA-512, the StandardAuthorizer, a principal per service) and, in the same run,
on an open Kafka node beside it (no authentication, no authorizer; the baseline, which the stack
never runs).

    .venv/bin/python -m bench.sasl [--lifecycles 8] [--seconds 15] [--concurrency 8] [--rounds 3]

Needs the local stack (`modelbus stack up`). For each broker: a platform of seven processes runs
the lifecycle benchmark (bench/lifecycle.py: DataArrived to the rollout, its control-plane
overhead), then `hey` sends predictions to the model it rolled out for `--seconds`, `--rounds`
times (the median counts; serving logs each prediction to Kafka as PredictionsLogged, as in
production). Prints a table and writes JSON
(default bench/results/sasl.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import uuid
from pathlib import Path
from typing import Any

from bench.common import hey, publish, say, table
from bench.lifecycle import run
from shared.ops.demo import FEATURES
from shared.ops.example_data import churn_frame
from shared.ops.kafka import Kafka
from shared.runtime.broker import drop_topics, ensure_topics
from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

OPEN_PORT = 29092  # beside the stack's 9092 (and the fault tests' 19092-19097)


def predictions(settings: Settings, seconds: float, concurrency: int, rounds: int) -> Any:
    """A serving load on the model the lifecycles rolled out: `rounds` runs, the median of each figure."""

    async def load(model: str) -> dict[str, float]:
        rows = churn_frame(8, seed=3)[FEATURES].astype(object).to_dict("records")
        url = f"http://127.0.0.1:{settings.serving_port}/v1/models/{model}:predict"
        body = json.dumps({"instances": rows})
        runs = [
            await asyncio.to_thread(hey, url, concurrency=concurrency, seconds=seconds, body=body)
            for _ in range(rounds)
        ]
        return {key: statistics.median(run[key] for run in runs) for key in runs[0]}

    return load


async def measure(settings: Settings, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    await ensure_topics(settings)
    try:
        found = await run(
            settings,
            args.lifecycles,
            args.rows,
            env=env,
            after=predictions(settings, args.seconds, args.concurrency, args.rounds),
        )
    finally:
        await drop_topics(settings)
    overheads = [r["overhead_seconds"] for r in found["lifecycles"]]
    totals = [r["total_seconds"] for r in found["lifecycles"]]
    return {
        "lifecycle_total_p50": statistics.median(totals),
        "lifecycle_overhead_p50": statistics.median(overheads),
        "lifecycle_overhead_mean": statistics.fmean(overheads),
        "serving": found["after"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lifecycles", type=int, default=8)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="Serving runs per broker; the median counts.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sasl.json")
    args = parser.parse_args()
    secured = Settings().model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}"})
    if secured.kafka_security_protocol == "PLAINTEXT":
        raise SystemExit("the local stack's credentials are missing: run `modelbus stack up` first")
    home = ROOT / ".modelbus" / "bench" / "open-kafka"
    node_settings = Settings(stack_dir=home, kafka_bootstrap=f"127.0.0.1:{OPEN_PORT}")
    node = Kafka("kafka", node_settings, say, open=True)
    node.home.mkdir(parents=True, exist_ok=True)
    if node.running():
        node.stop()
    node.start()
    try:
        opened = secured.model_copy(
            update={
                "kafka_bootstrap": f"127.0.0.1:{OPEN_PORT}",
                "kafka_security_protocol": "PLAINTEXT",
                "topic_prefix": f"bench-{uuid.uuid4().hex[:8]}",
            }
        )
        open_env = {"MODELBUS_KAFKA_BOOTSTRAP": opened.kafka_bootstrap, "MODELBUS_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
        say("[bench] open Kafka (no authentication, no authorizer)")
        baseline = asyncio.run(measure(opened, args, open_env))
        say("[bench] the secured stack (SASL/SCRAM-SHA-512, ACLs, a principal per service)")
        result = asyncio.run(measure(secured, args, {}))
    finally:
        node.stop()
    rows = [
        ("lifecycle: DataArrived → rollout, p50 (s)", "lifecycle_total_p50", None),
        ("lifecycle: control-plane overhead, p50 (s)", "lifecycle_overhead_p50", None),
        ("lifecycle: control-plane overhead, mean (s)", "lifecycle_overhead_mean", None),
        ("serving: requests/s", "serving", "ops_per_s"),
        ("serving: p50 (ms)", "serving", "p50_ms"),
        ("serving: p99 (ms)", "serving", "p99_ms"),
    ]
    costs, lines = {}, []
    for label, key, sub in rows:
        a = baseline[key][sub] if sub else baseline[key]
        b = result[key][sub] if sub else result[key]
        cost = (a - b) / a if sub == "ops_per_s" else (b - a) / a
        costs[label] = cost
        lines.append([label, round(a, 3), round(b, 3), f"{cost:+.1%}"])
    shown = table(
        "Open Kafka against SASL/SCRAM with ACLs, same run",
        ["measure", "open", "SASL+ACLs", "cost"],
        lines,
        f"{args.lifecycles} lifecycles; serving: hey at c={args.concurrency} for {args.seconds:g} s, median of "
        f"{args.rounds} rounds.",
    )
    report = {
        "lifecycles": args.lifecycles,
        "serving_seconds": args.seconds,
        "concurrency": args.concurrency,
        "open": baseline,
        "secured": result,
        "cost": costs,
    }
    publish(args.out, "sasl", "Authentication: what SASL and ACLs cost", [shown], report)


if __name__ == "__main__":
    main()
