"""Streaming inference: rows per second through serving's scorer (Kafka in, Kafka out, exactly
once), its end-to-end latency at a steady rate, and the consumer a user would write by hand with
Quix Streams (exactly-once enabled) calling the same ONNX graph, same machine, same run.

    .venv/bin/python -m bench.inference [--rows 100000] [--listed-rows 200000] [--rate 1000]
                                        [--latency-seconds 10] [--no-peer]

Needs the local stack (`modelbus stack up`). A logistic regression on 20 numeric features is
trained with the trainer's code and registered and approved through events (fresh topic prefix),
so the deployer (a process) promotes it and serving (a process) loads it and scores its input
topic. Then:
  - one row per message: `--rows` messages written to the input topic while serving is down;
    serving started; rows per second from the first committed prediction to the last (the
    output records' timestamps);
  - a hundred rows per message: the same with `--listed-rows` rows;
  - latency: with serving running, one row per message at `--rate` rows/s for
    `--latency-seconds`; produce to committed prediction, as a read-committed consumer sees it;
  - the peer: Quix Streams (PyPI `quixstreams`, its own virtualenv) with
    `processing_guarantee="exactly-once"` (a transaction every 0.5 s: its default of 5 s makes a
    run of a few seconds one transaction), one ONNX Runtime call per message, on the same rows.
Rows per second are counted as a read-committed reader receives them.
Prints a table and writes JSON (default bench/results/inference.json).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import fit_model, free_port, fresh_platform, publish, say, serving_platform, table
from bench.serving import numeric_data, register, specs
from services.trainer import fit
from shared.contract import topics
from shared.contract.topics import TopicSpec
from shared.runtime.broker import aiokafka_options, ensure_topics
from shared.runtime.settings import Settings
from tests.support.venvs import pinned_python

ROOT = Path(__file__).resolve().parents[1]
PEER_PACKAGES = ("quixstreams==3.28.1", "onnxruntime", "numpy")
PEER = """
import json, sys, time
import numpy as np, onnxruntime as ort
from quixstreams import Application
from quixstreams.kafka.configuration import ConnectionConfig

bootstrap, user, password, source, target, model, features = sys.argv[1:8]
features = json.loads(features)
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
kinds = {i.name: (np.float64 if "double" in i.type else np.float32) for i in session.get_inputs()}
app = Application(
    broker_address=ConnectionConfig(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                                    sasl_mechanism="SCRAM-SHA-512", sasl_username=user, sasl_password=password),
    consumer_group=source + ".quix", auto_offset_reset="earliest", processing_guarantee="exactly-once",
    auto_create_topics=False, commit_interval=0.5,
)
inputs = app.topic(source, value_deserializer="json")
outputs = app.topic(target, value_serializer="json")

def score(value):
    rows = value if isinstance(value, list) else [value]
    feed = {f: np.array([[row[f]] for row in rows], dtype=kinds[f]) for f in features}
    labels, probabilities = session.run(None, feed)
    found = [{"prediction": int(l), "probabilities": {str(k): float(v) for k, v in enumerate(p)}}
             for l, p in zip(labels, np.asarray(probabilities))]
    return found if isinstance(value, list) else found[0]

app.dataframe(inputs).apply(score).to_topic(outputs)
app.run()
"""


def peer_python() -> Path:
    """Python of the Quix Streams virtualenv (made on first use)."""
    return pinned_python("quix-venv", PEER_PACKAGES, "Quix Streams")


async def write(settings: Settings, topic: str, values: list[Any]) -> float:
    """Write the values (as JSON) to a full topic name as fast as the producer goes; seconds taken."""
    producer = AIOKafkaProducer(**aiokafka_options(settings), acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    began = time.perf_counter()
    try:
        pending = []
        for value in values:
            pending.append(await producer.send(topic, orjson.dumps(value)))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - began


async def ends(settings: Settings, topic: str) -> dict[int, int]:
    """The end offset of each partition of a full topic name."""
    consumer = AIOKafkaConsumer(**aiokafka_options(settings), group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(partitions)).items()}
    finally:
        await consumer.stop()


async def timeline(
    settings: Settings, topic: str, rows: int, timeout: float, after: dict[int, int] | None = None
) -> list[tuple[float, int]]:
    """(when it arrived, rows) of each committed output message of a full topic name (from the
    offsets `after`, else its start), until `rows` rows came. Arrival, not the record's timestamp:
    a stream processor may stamp its outputs with its inputs' times (Quix Streams does)."""
    consumer = AIOKafkaConsumer(
        **aiokafka_options(settings), group_id=None, isolation_level="read_committed", auto_offset_reset="earliest"
    )
    await consumer.start()
    await consumer._client.force_metadata_update()
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, (after or {}).get(tp.partition, 0))
    found: list[tuple[float, int]] = []
    seen, deadline = 0, time.monotonic() + timeout
    try:
        while seen < rows and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    value = orjson.loads(record.value or b"null")
                    count = len(value) if isinstance(value, list) else 1
                    found.append((time.perf_counter(), count))
                    seen += count
    finally:
        await consumer.stop()
    if seen < rows:
        raise SystemExit(f"only {seen:,} of {rows:,} rows were scored within {timeout:.0f} s")
    return found


def rate(found: list[tuple[float, int]]) -> float:
    """Rows per second as a read-committed reader receives them, from the first transaction it
    saw to the last (the first one's rows excluded: they were scored before the clock started)."""
    first = found[0][0]
    opening = sum(n for t, n in found if t - first < 0.05)  # one poll's worth: the first transaction
    rows = sum(n for _, n in found) - opening
    return rows / max(found[-1][0] - first, 1e-3)


async def latency(
    settings: Settings, model: str, rows: list[dict[str, Any]], per_second: float, seconds: float
) -> list[float]:
    """Produce to committed prediction, in milliseconds, one row per message at a steady rate."""
    consumer = AIOKafkaConsumer(
        settings.topic(topics.outputs(model)),
        **aiokafka_options(settings),
        group_id=None,
        isolation_level="read_committed",
        auto_offset_reset="latest",
    )
    await consumer.start()
    await consumer.seek_to_end()
    sent: dict[bytes, float] = {}
    arrived: dict[bytes, float] = {}

    async def receive() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                now = time.perf_counter()
                for record in records:
                    arrived[dict(record.headers)["request-id"]] = now

    receiving = asyncio.create_task(receive())
    producer = AIOKafkaProducer(**aiokafka_options(settings), acks="all", linger_ms=0)
    await producer.start()
    try:
        topic = settings.topic(topics.inputs(model))
        # Until the scorer answers (its group joined, its partitions assigned), nothing is timed.
        for attempt in range(600):
            probe = f"probe-{attempt}".encode()
            sent[probe] = time.perf_counter()
            await producer.send_and_wait(topic, orjson.dumps(rows[0]), headers=[("request-id", probe)])
            await asyncio.sleep(0.1)
            if arrived:
                break
        sent.clear()
        total = int(per_second * seconds)
        began = time.perf_counter()
        for i in range(total):
            due = began + i / per_second
            pause = due - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            key = f"lat-{i}".encode()
            sent[key] = time.perf_counter()
            await producer.send(topic, orjson.dumps(rows[i % len(rows)]), headers=[("request-id", key)])
        for _ in range(300):  # up to 30 s for the last ones
            if len(arrived) >= total:
                break
            await asyncio.sleep(0.1)
    finally:
        receiving.cancel()
        await producer.stop()
        await consumer.stop()
    return [(arrived[k] - sent[k]) * 1000 for k in sent if k in arrived]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows written one per message")
    parser.add_argument("--listed-rows", type=int, default=200_000, help="rows written a hundred per message")
    parser.add_argument("--rate", type=float, default=1000, help="rows per second of the latency run")
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "inference.json")
    args = parser.parse_args()
    suffix, settings, folder = fresh_platform("inference")
    spec = specs(suffix)["logistic-regression"]
    data = numeric_data(folder / "numeric.csv")
    outcome = fit_model("logistic-regression", spec, data, folder)
    asyncio.run(register(settings, spec, outcome))
    model, features = spec.model, [f.name for f in spec.features]
    frame = pd.read_csv(data)[features]
    rows = [{k: float(v) for k, v in r.items()} for r in frame.to_dict("records")]
    streams = [
        TopicSpec(f(name), topics.STREAM_PARTITIONS)
        for name in (model, "peer")
        for f in (topics.inputs, topics.outputs)
    ]
    asyncio.run(ensure_topics(settings, catalog=streams, acls=False))
    env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_SERVING_PORT": str(free_port()),
        "MODELBUS_SERVING_MODELS": model,
        "MODELBUS_LOG_LEVEL": "WARNING",
        "MODELBUS_OTLP_ENDPOINT": "",
    }
    inputs, outputs = settings.topic(topics.inputs(model)), settings.topic(topics.outputs(model))
    results: dict[str, Any] = {"rows": args.rows, "listed_rows": args.listed_rows}
    single = [rows[i % len(rows)] for i in range(args.rows)]
    listed = [[rows[(i + j) % len(rows)] for j in range(100)] for i in range(0, args.listed_rows, 100)]
    for name, values, count in (
        ("one row per message", single, args.rows),
        ("100 rows per message", listed, args.listed_rows),
    ):
        after = asyncio.run(ends(settings, outputs))
        took = asyncio.run(write(settings, inputs, values))
        say(f"[bench] {name}: {len(values):,} messages written in {took:.1f} s; starting serving")
        with serving_platform(
            env, folder, lambda models: model in models, timeout=120, what="the model", logs=f"{len(values)}-"
        ):
            found = asyncio.run(timeline(settings, outputs, count, 600, after))
        results[name] = {"rows_per_second": rate(found), "messages": len(values)}
        say(f"[bench]   {results[name]['rows_per_second']:,.0f} rows/s")
    with serving_platform(env, folder, lambda models: model in models, timeout=120, what="the model", logs="latency-"):
        time.sleep(3)
        waits = asyncio.run(latency(settings, model, rows, args.rate, args.latency_seconds))
    waits.sort()
    results["latency"] = {
        "rate": args.rate,
        "seconds": args.latency_seconds,
        "received": len(waits),
        "p50_ms": statistics.median(waits),
        "p99_ms": float(np.percentile(waits, 99)),
    }
    lat = results["latency"]
    say(f"[bench] latency at {args.rate:,.0f} rows/s: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms")
    if not args.no_peer:
        results["peer"] = peer(settings, outcome, features, single, listed, folder)
    shown = [
        ["modelbus scorer", "one row per message", round(results["one row per message"]["rows_per_second"])],
        ["modelbus scorer", "100 rows per message", round(results["100 rows per message"]["rows_per_second"])],
    ]
    if "peer" in results:
        for name, found in results["peer"].items():
            shown.append(["Quix Streams, exactly-once, ONNX Runtime", name, round(found["rows_per_second"])])
    tables = [
        table(
            "Streaming inference, LR on 20 features, rows/s per process (exactly once)",
            ["consumer", "messages", "rows/s"],
            shown,
        ),
        table(
            f"Produce to committed prediction at {lat['rate']:,.0f} rows/s for {lat['seconds']:.0f} s",
            ["received", "p50 ms", "p99 ms"],
            [[lat["received"], round(lat["p50_ms"], 1), round(lat["p99_ms"], 1)]],
        ),
    ]
    publish(args.out, "inference", "Streaming inference: rows per second and latency", tables, results)


def peer(
    settings: Settings,
    outcome: fit.Outcome,
    features: list[str],
    single: list[Any],
    listed: list[Any],
    folder: Path,
) -> dict[str, Any]:
    """The Quix Streams consumer on the same rows, one row and a hundred rows per message."""
    python = peer_python()
    script = folder / "quix_peer.py"
    script.write_text(PEER)
    found: dict[str, Any] = {}
    for name, values, count in (
        ("one row per message", single, len(single)),
        ("100 rows per message", listed, len(listed) * 100),
    ):
        tag = "one" if name.startswith("one") else "listed"
        source, target = settings.topic(f"inputs.peer-{tag}"), settings.topic(f"outputs.peer-{tag}")
        specs_ = [TopicSpec(f"inputs.peer-{tag}", 3), TopicSpec(f"outputs.peer-{tag}", 3)]
        asyncio.run(ensure_topics(settings, catalog=specs_, acls=False))
        asyncio.run(write(settings, source, values))
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        command = [
            str(python), str(script), settings.kafka_bootstrap, settings.kafka_sasl_username or "", password,
            source, target, outcome.files["model.onnx"], orjson.dumps(features).decode(),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=(folder / f"quix-{tag}.log").open("w"))
        try:
            timing = asyncio.run(timeline(settings, target, count, 900))
        finally:
            process.terminate()
            process.wait(timeout=30)
        found[name] = {"rows_per_second": rate(timing), "messages": len(values)}
        say(f"[bench] Quix Streams, {name}: {found[name]['rows_per_second']:,.0f} rows/s")
    return found


if __name__ == "__main__":
    main()
