"""Lifecycle benchmark: the control plane's overhead from data to rollout, on the real broker.

    .venv/bin/python -m bench.lifecycle [--lifecycles 20] [--rows 2000]

Needs the local stack (`modelbus stack up`); starts the platform (seven processes, as `modelbus
up`) on a fresh topic prefix, applies a small spec (the example's features, one logistic
regression, no search) and runs lifecycles one after another: publish `DataArrived` (a new
dataset version) and wait for the `RolloutChanged` that starts the new version's rollout. For
each: the time from publishing to that RolloutChanged, the training job (TrainingStarted to
ModelTrained, in which the fit itself is `training_seconds`) and the evaluation's own time
(`evaluation_seconds`); the overhead is what is left: the control plane (queueing, events through
Kafka and the outbox, the registry, the deployer's decision). Times are the Kafka records'
timestamps (one clock: all processes run here). Prints a table and writes JSON (default
bench/results/lifecycle.json).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import publish, say, table
from shared.contract.events import (
    DataArrived,
    ModelEvaluated,
    ModelRegistered,
    ModelTrained,
    RolloutChanged,
    TrainingFailed,
    TrainingStarted,
)
from shared.contract.spec import Candidate, Evaluation
from shared.ops.example_data import churn_frame
from shared.ops.platform import Follower, Platform
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.broker import ensure_topics
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec

ROOT = Path(__file__).resolve().parents[1]


def small_spec(model: str) -> str:
    example = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())
    spec = example.model_copy(
        update={
            "model": model,
            "dataset": model,
            "candidates": [Candidate(estimator="sklearn.linear_model.LogisticRegression", params={"max_iter": 300})],
            # Every version goes on to its rollout: the overhead, not the model, is measured.
            "gates": [],
            "evaluation": Evaluation(),
        }
    )
    return spec.model_dump_json()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def run(
    settings: Settings, lifecycles: int, rows: int, *, env: dict[str, str] | None = None, after: Any = None
) -> dict[str, Any]:
    """`lifecycles` lifecycles on a platform of `settings` (`env`: more of its environment); then
    `after(model)` while the platform still runs, its result kept as `after`."""
    token = f"bench-{secrets.token_hex(8)}"
    model = f"bench-life-{uuid.uuid4().hex[:6]}"
    runner = Platform(
        settings,
        say,
        extra_env={
            "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
            "MODELBUS_API_TOKENS": f"{token}=admin:bench",
            "MODELBUS_LOG_LEVEL": "WARNING",
            "MODELBUS_OTLP_ENDPOINT": "",
            **(env or {}),
        },
    )
    runner.start()
    try:
        await runner.wait_ready()
        async with httpx.AsyncClient(timeout=30) as http:
            applied = await http.post(
                f"http://127.0.0.1:{settings.registry_port}/v1/specs",
                json={"spec_yaml": small_spec(model), "reason": "bench"},
                headers={"Authorization": f"Bearer {token}"},
            )
            applied.raise_for_status()
        follower = Follower(settings)
        await follower.start()
        bus = Bus(settings.model_copy(update={"service_name": "bench"}))
        await bus.start()
        store = ArtifactStore(settings)
        results: list[dict[str, Any]] = []
        events_seen = 0
        began = time.time()
        try:
            with tempfile.TemporaryDirectory() as folder:
                for index in range(1, lifecycles + 1):
                    path = Path(folder) / f"v{index}.csv"
                    churn_frame(rows, seed=100 + index).to_csv(path, index=False)
                    stored = await asyncio.to_thread(store.put_file, f"datasets/{model}/v{index}.csv", path)
                    published = time.time()
                    await bus.publish(
                        DataArrived(dataset=model, version=f"v{index}", uri=stored.uri, sha256=stored.sha256)
                    )
                    marks: dict[str, float] = {"published": published}
                    numbers: dict[str, float] = {}
                    version: int | None = None
                    deadline = time.monotonic() + 300
                    while "rollout" not in marks:
                        if time.monotonic() > deadline:
                            raise SystemExit(f"lifecycle {index} stalled; seen {sorted(marks)}; logs in {runner.logs}")
                        for envelope in await follower.envelopes():
                            events_seen += 1
                            event = envelope.event
                            if getattr(event, "model", None) != model:
                                continue
                            at = envelope.time.timestamp() if envelope.time else time.time()
                            if isinstance(event, TrainingFailed):
                                raise SystemExit(f"lifecycle {index}: training failed: {event.reason}")
                            if isinstance(event, TrainingStarted) and event.dataset_version == f"v{index}":
                                marks["started"] = at
                            elif isinstance(event, ModelTrained) and event.dataset_version == f"v{index}":
                                marks["trained"] = at
                                numbers["fit"] = event.training_seconds
                            elif isinstance(event, ModelRegistered) and event.dataset_version == f"v{index}":
                                marks["registered"] = at
                                version = event.version
                            elif isinstance(event, ModelEvaluated) and event.version == version:
                                marks["evaluated"] = at
                                numbers["evaluation"] = event.evaluation_seconds or 0.0
                                if event.decision != "approved":
                                    failed = [g.name for g in event.gates if not g.passed]
                                    raise SystemExit(f"lifecycle {index}: v{version} {event.decision} ({failed})")
                            elif (
                                isinstance(event, RolloutChanged)
                                and event.candidate_version == version
                                and event.to_state in ("canary", "shadow", "promoted")
                            ):
                                marks["rollout"] = at
                                numbers["state"] = 0.0 if event.to_state == "promoted" else 1.0
                    total = marks["rollout"] - published
                    job = marks["trained"] - marks["started"]
                    overhead = total - job - numbers["evaluation"]
                    results.append(
                        {
                            "lifecycle": index,
                            "version": version,
                            "total_seconds": total,
                            "training_job_seconds": job,
                            "fit_seconds": numbers["fit"],
                            "evaluation_seconds": numbers["evaluation"],
                            "overhead_seconds": overhead,
                            "overhead_beyond_fit_seconds": total - numbers["fit"] - numbers["evaluation"],
                            "stages": {k: round(v - published, 3) for k, v in marks.items()},
                        }
                    )
                    say(
                        f"[bench] lifecycle {index:>2}: v{version} total {total:.2f} s = training job {job:.2f} s "
                        f"(fit {numbers['fit']:.2f}) + evaluation {numbers['evaluation']:.2f} s "
                        f"+ overhead {overhead:.2f} s"
                    )
        finally:
            await bus.stop()
            await follower.stop()
        elapsed = time.time() - began
        extra = {"after": await after(model)} if after is not None else {}
        return {"model": model, "lifecycles": results, "elapsed_seconds": elapsed, "events_seen": events_seen, **extra}
    finally:
        runner.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lifecycles", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lifecycle.json")
    args = parser.parse_args()
    settings = Settings().model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}"})
    asyncio.run(ensure_topics(settings))
    say(f"[bench] {args.lifecycles} lifecycles of {args.rows}-row datasets (prefix {settings.topic_prefix})")
    found = asyncio.run(run(settings, args.lifecycles, args.rows))
    rows = found["lifecycles"]

    def column(name: str) -> list[float]:
        return [r[name] for r in rows]

    stages = (
        ("DataArrived → rollout started", "total_seconds"),
        ("training job (TrainingStarted → ModelTrained)", "training_job_seconds"),
        ("of which the fit", "fit_seconds"),
        ("evaluation", "evaluation_seconds"),
        ("control-plane overhead", "overhead_seconds"),
        ("overhead counting only the fit", "overhead_beyond_fit_seconds"),
    )
    rate = found["events_seen"] / found["elapsed_seconds"]
    shown = table(
        f"{len(rows)} lifecycles of {args.rows:,}-row datasets, one after another",
        ["seconds", "p50", "p95", "max"],
        [[label, round(percentile(column(name), 0.5), 3), round(percentile(column(name), 0.95), 3),
          round(max(column(name)), 3)] for label, name in stages],
        f"Lifecycle events through the bus: {found['events_seen']:,} in {found['elapsed_seconds']:.1f} s "
        f"({rate:.1f} per s).",
    )  # fmt: skip
    result = {
        "lifecycles": len(rows),
        "rows_per_dataset": args.rows,
        "p50": {name: statistics.median(column(name)) for name in ("total_seconds", "overhead_seconds")},
        "p95": {name: percentile(column(name), 0.95) for name in ("total_seconds", "overhead_seconds")},
        "events_per_second": rate,
        "runs": rows,
    }
    publish(args.out, "lifecycle", "Lifecycle: from new data to a rollout, and the control plane's share", [shown],
            result)  # fmt: skip


if __name__ == "__main__":
    main()
