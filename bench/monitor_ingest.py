"""Monitor ingestion: prediction records per second through the real Kafka into one monitor process.

    .venv/bin/python -m bench.monitor_ingest [--records 1000000] [--batch 500] [--window 10000]
                                              [--labels 0.2]

Needs the local stack (`modelbus stack up`). On a fresh topic prefix: publishes a spec (windows of
`--window` rows), the example model's training and registration (its reference profile), then
`--records` prediction records as PredictionsLogged events of `--batch` records and, with
`--labels`, that share of their request ids labelled (a LabelsArrived after each batch, on its own
topic: the monitor meets them in whatever order it polls the two), all before the monitor starts;
then starts one monitor process and times it from its start until every record is in a window
(closed windows' rows plus the open window's), with drift computed on every window that closed,
and every label joined (the monitor's ledger). Prints a table and writes JSON (default
bench/results/monitor_ingest.json).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from bench.common import publish, say, table
from services.monitor import tables
from shared.contract.events import (
    ArtifactRef,
    FeatureSchema,
    Label,
    LabelsArrived,
    ModelRegistered,
    ModelSpecApplied,
    ModelTrained,
    Prediction,
    PredictionsLogged,
)
from shared.ops.example_data import churn_frame
from shared.runtime.broker import ensure_topics
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine, make_sessions
from shared.runtime.profile import reference_profile
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec

ROOT = Path(__file__).resolve().parents[1]

EXAMPLE = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())
FEATURES = [f.name for f in EXAMPLE.features]


async def prepare(settings: Settings, model: str, records: int, batch: int, window: int, labels: float) -> float:
    """Publish everything the monitor will read; returns the seconds publishing took."""
    monitoring = EXAMPLE.monitoring.model_copy(update={"window_rows": window, "window_seconds": 86_400})
    spec = EXAMPLE.model_copy(update={"model": model, "dataset": model, "monitoring": monitoring})
    train = churn_frame(5000, seed=7)
    profile = reference_profile(
        spec.features,
        train,
        (train["monthly_charges"] > 70).astype(int).to_numpy(),
        task=spec.task,
        seed=spec.split.seed,
    )
    artifact = ArtifactRef(name="model.skops", uri="s3://modelbus-artifacts/bench", sha256="0" * 64, size_bytes=1)
    frame = churn_frame(min(records, 50_000), seed=8, shift=0.3)
    rows = frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None).to_dict("records")
    now = datetime.now(UTC)
    bus = Bus(settings.model_copy(update={"service_name": "bench"}))
    await bus.start()
    began = time.perf_counter()
    try:
        await bus.publish(
            ModelSpecApplied(model=model, revision=1, spec=spec, spec_yaml="-", spec_sha256="0" * 64, applied_by="b")
        )
        await bus.publish(
            ModelTrained(
                model=model,
                run_id="run-1",
                task="classification",
                target="churned",
                dataset=model,
                dataset_version="v1",
                data_sha256="0" * 64,
                spec_revision=1,
                estimator="sklearn.linear_model.LogisticRegression",
                params={},
                metrics={"accuracy": 0.8},
                candidates=[],
                artifacts=[artifact],
                feature_schema=[FeatureSchema(name=n, kind="numeric", dtype="float64") for n in FEATURES],
                reference_profile=profile,
                code_version="bench",
                training_seconds=1.0,
            )
        )
        await bus.publish(
            ModelRegistered(
                model=model,
                version=1,
                run_id="run-1",
                dataset_version="v1",
                task="classification",
                artifacts=[artifact],
                metrics={},
            )
        )
        pending = []
        for start in range(0, records, batch):
            predictions = [
                Prediction(
                    request_id=f"{model}-{i}",  # unique per run: earlier runs' answers stay for the horizon
                    model_version=1,
                    role="stable",
                    features=rows[i % len(rows)],
                    prediction=int(i % 3 == 0),
                    probabilities={"0": 0.7, "1": 0.3},
                    latency_ms=0.4,
                    served_at=now + timedelta(microseconds=10 * i),  # as served at 100,000 a second
                )
                for i in range(start, min(start + batch, records))
            ]
            pending.append(bus.publish(PredictionsLogged.from_records(model, f"b{start}", predictions)))
            truths = [
                Label(request_id=p.request_id, label=p.prediction, observed_at=now)
                for n, p in enumerate(predictions)
                if labelled(start + n, labels)
            ]
            if truths:
                pending.append(bus.publish(LabelsArrived(model=model, labels=truths)))
            if len(pending) >= 50:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await bus.stop()
    return time.perf_counter() - began


def labelled(index: int, share: float) -> bool:
    """Whether record `index` is labelled: `share` of the records, spread evenly."""
    return share > 0 and int((index + 1) * share) > int(index * share)


async def counted(settings: Settings, model: str) -> tuple[int, int, int]:
    """(rows in closed or open windows, windows closed, labels joined) for the model."""
    engine = make_engine(settings)
    try:
        async with make_sessions(engine)() as session:
            closed = await session.scalar(
                select(func.coalesce(func.sum(tables.WindowRow.rows), 0)).where(tables.WindowRow.model == model)
            )
            windows = await session.scalar(select(func.count()).where(tables.WindowRow.model == model))
            open_rows = await session.scalar(
                select(func.coalesce(func.sum(tables.OpenWindow.rows), 0)).where(tables.OpenWindow.model == model)
            )
            joined = await session.scalar(select(tables.LedgerRow.labels_joined).where(tables.LedgerRow.model == model))
            return int(closed or 0) + int(open_rows or 0), int(windows or 0), int(joined or 0)
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--labels", type=float, default=0.0, help="share of the records labelled (0 to 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "monitor_ingest.json")
    args = parser.parse_args()
    settings = Settings().model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}"})
    asyncio.run(ensure_topics(settings))
    model = f"bench-ingest-{uuid.uuid4().hex[:6]}"
    say(f"[bench] publishing {args.records:,} records in batches of {args.batch} (prefix {settings.topic_prefix}) …")
    publish_seconds = asyncio.run(prepare(settings, model, args.records, args.batch, args.window, args.labels))
    wanted_labels = sum(labelled(i, args.labels) for i in range(args.records))
    say(f"[bench] published in {publish_seconds:.1f} s; starting the monitor")
    logs = Path(tempfile.mkdtemp(prefix="modelbus-bench-ingest-"))
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_LOG_LEVEL": "WARNING",
        "MODELBUS_OTLP_ENDPOINT": "",
    }
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.monitor"], cwd=ROOT, env=env, stderr=(logs / "monitor.log").open("w")
    )
    samples: list[tuple[float, int]] = []
    try:
        deadline = began + 600
        while True:
            rows, windows, joined = asyncio.run(counted(settings, model))
            elapsed = time.perf_counter() - began
            samples.append((elapsed, rows))
            if rows >= args.records and joined >= wanted_labels:
                break
            if process.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"the monitor stopped at {rows:,} of {args.records:,} rows; see {logs}")
            if len(samples) % 4 == 1:  # sampled every 0.25 s, told every second
                say(f"[bench]   {elapsed:5.1f} s: {rows:,} rows in windows, {windows} closed, {joined:,} labels joined")
            time.sleep(0.25)
    finally:
        process.terminate()
        process.wait(timeout=30)
    total = samples[-1][0]
    # The steady rate: from the first row seen to the last (process start-up and warm-up excluded).
    first = next((t for t, r in samples if r > 0), total)
    steady_rows = args.records - next((r for t, r in samples if r > 0), 0)
    steady = steady_rows / (total - first) if total > first else float("nan")
    columns = ["records", "labels", "batch", "window", "windows", "from start s", "records/s", "steady/s"]
    row = [args.records, wanted_labels, args.batch, args.window, windows, round(total, 1)]
    row += [round(args.records / total), round(steady)]
    tables = [table("Monitor ingestion through the real Kafka, one monitor process", columns, [row])]
    result: dict[str, Any] = {
        "benchmark": "monitor_ingest",
        "records": args.records,
        "labels": wanted_labels,
        "labels_joined": joined,
        "batch": args.batch,
        "window_rows": args.window,
        "windows_closed": windows,
        "seconds_from_start": total,
        "records_per_second": args.records / total,
        "steady_records_per_second": steady,
        "samples": samples,
        "median_sample_gap": float(np.median(np.diff([t for t, _ in samples]))) if len(samples) > 1 else None,
    }
    publish(args.out, "monitor_ingest", "Monitor ingestion: prediction records per second", tables, result)


if __name__ == "__main__":
    main()
