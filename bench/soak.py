"""Soak: the platform under mixed load for a long while, watched for growth.

    .venv/bin/python -m bench.soak [--minutes 30] [--rows-per-second 1000] [--lifecycle-every 30]
                                   [--warm-up 5] [--out PATH] [--plot PATH]

Needs the local stack (`modelbus stack up`) and the platform's ports free; starts the seven
processes on a fresh topic prefix. Load, all at once, for `--minutes`:
  - predictions through serving's `/v1` at `--rows-per-second` (requests of 100 rows), half of them
    from a world that drifts (the example's shift), so windows close and drift is computed;
  - labels for a fifth of what was served, 5 s after it was answered;
  - a new lifecycle every `--lifecycle-every` seconds (a new dataset version of one of three
    models, round robin: trained, registered, evaluated, rolled out).
Every 15 s it samples each process's resident memory, the consumer groups' lag (the processes'
own `modelbus_consumer_lag`), the outbox's unpublished rows, the inbox's rows and the database's
size. Prints a table (growth of each process after the warm-up, the largest lag, the growth of
the tables per hour) and writes JSON (default bench/results/soak.json) and a PNG plot of memory
and lag over time (default bench/results/soak.png). Goals: no process grows more than 10 % after
the warm-up; the lag stays bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from bench.common import publish, rss_bytes, say, table
from shared.contract.events import DataArrived, Label, LabelsArrived
from shared.ops.example_data import churn_frame
from shared.ops.platform import processes
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine
from shared.runtime.settings import Settings
from tests.support.faults import Harness, lifecycle_ends, light_spec, until

ROOT = Path(__file__).resolve().parents[1]

FEATURES = ["tenure_months", "monthly_charges", "support_calls", "plan", "region"]
SAMPLE_SECONDS = 15.0
LAG = re.compile(r"^modelbus_consumer_lag\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


async def new_version(h: Harness, model: str, version: str, seed: int) -> None:
    """A dataset version of `model`, uploaded and announced."""
    data = churn_frame(3000, seed=seed).to_csv(index=False).encode()
    stored = await asyncio.to_thread(ArtifactStore(h.settings).put_bytes, f"datasets/{model}/{version}.csv", data)
    await h.publish(DataArrived(dataset=model, version=version, uri=stored.uri, sha256=stored.sha256, format="csv"))


async def sample(h: Harness, pids: dict[str, int], began: float) -> dict[str, Any]:
    """One sample of memory, lag and tables."""
    memory = {name: rss_bytes(pid) for name, pid in pids.items()}
    lag = 0.0
    async with httpx.AsyncClient(timeout=5) as http:
        for process in processes(h.settings):
            with contextlib.suppress(httpx.HTTPError):
                page = (await http.get(f"{process.url}/metrics")).text
                lag += sum(float(v) for v in LAG.findall(page))
    engine = make_engine(h.settings)
    try:
        async with engine.connect() as connection:
            prefix = f"{h.settings.topic_prefix}.%"
            outbox = await connection.scalar(
                text("SELECT count(*) FROM outbox WHERE published_at IS NULL AND topic LIKE :p"), {"p": prefix}
            )
            inbox = await connection.scalar(text("SELECT count(*) FROM inbox WHERE consumer LIKE :p"), {"p": prefix})
            size = await connection.scalar(text("SELECT pg_database_size(current_database())"))
    finally:
        await engine.dispose()
    return {
        "t": round(time.monotonic() - began, 1),
        "rss": memory,
        "lag": lag,
        "outbox_unpublished": int(outbox or 0),
        "inbox_rows": int(inbox or 0),
        "database_bytes": int(size or 0),
    }


async def soak(settings: Settings, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    h = Harness(settings, folder)
    await h.start()
    pids = {name: popen.pid for name, (_, popen) in h.platform.running.items()}
    tag = uuid.uuid4().hex[:4]
    served_model = f"soak-{tag}-served"
    rotating = [f"soak-{tag}-{i}" for i in range(3)]
    try:
        for model in [served_model, *rotating]:
            await h.apply(light_spec(model, train_on_data=True))
        await new_version(h, served_model, "v1", 1)

        async def serving_ready() -> bool:
            return served_model in await lifecycle_ends(h)

        await until(serving_ready, timeout=300, every=2)
        say(f"[soak] {served_model} serving; {args.minutes:.0f} minutes of load from now")
        began = time.monotonic()
        deadline = began + args.minutes * 60
        samples: list[dict[str, Any]] = []
        counts = {"rows": 0, "labels": 0, "lifecycles": 0, "errors": 0}
        to_label: list[tuple[float, list[Label]]] = []

        async def predictions() -> None:
            url = f"http://127.0.0.1:{h.settings.serving_port}/v1/models/{served_model}:predict"
            per_request = 100
            pause = per_request / args.rows_per_second
            number = 0
            async with httpx.AsyncClient(timeout=30) as http:
                while time.monotonic() < deadline:
                    number += 1
                    shift = 0.8 if number % 2 else 0.0
                    frame = churn_frame(per_request, seed=number, shift=shift)
                    sent = time.monotonic()
                    try:
                        rows = [
                            {k: (None if v != v else v) for k, v in row.items()}  # NaN: a missing value
                            for row in frame[FEATURES].astype(object).to_dict("records")
                        ]
                        answer = await http.post(url, json={"instances": rows})
                        answer.raise_for_status()
                        counts["rows"] += per_request
                        if number % 5 == 0:
                            now = datetime.now(UTC)
                            labels = [
                                Label(request_id=p["request_id"], label=int(truth), observed_at=now)
                                for p, truth in zip(answer.json()["predictions"], frame["churned"], strict=True)
                            ]
                            to_label.append((time.monotonic(), labels))
                    except httpx.HTTPError:
                        counts["errors"] += 1
                    await asyncio.sleep(max(0.0, pause - (time.monotonic() - sent)))

        async def labels() -> None:
            bus = Bus(h.settings.model_copy(update={"service_name": "soak-labels"}))
            await bus.start()
            try:
                while time.monotonic() < deadline or to_label:
                    while to_label and to_label[0][0] < time.monotonic() - 5:
                        _, batch = to_label.pop(0)
                        await bus.publish(LabelsArrived(model=served_model, labels=batch))
                        counts["labels"] += len(batch)
                    if time.monotonic() >= deadline and not to_label:
                        break
                    await asyncio.sleep(1)
            finally:
                await bus.stop()

        async def lifecycles() -> None:
            number = 0
            while time.monotonic() + args.lifecycle_every < deadline:
                await asyncio.sleep(args.lifecycle_every)
                model = rotating[number % len(rotating)]
                number += 1
                await new_version(h, model, f"v{number}", 1000 + number)
                counts["lifecycles"] += 1

        async def watch() -> None:
            while time.monotonic() < deadline:
                samples.append(await sample(h, pids, began))
                last = samples[-1]
                resident = sum(last["rss"].values()) / 2**20
                say(
                    f"[soak] {last['t']:.0f} s: rss {resident:.0f} MiB, lag {last['lag']:.0f}, "
                    f"outbox {last['outbox_unpublished']}, inbox {last['inbox_rows']}, rows served {counts['rows']}"
                )
                await asyncio.sleep(SAMPLE_SECONDS)
            samples.append(await sample(h, pids, began))

        await asyncio.gather(predictions(), labels(), lifecycles(), watch())
        alive = not h.platform.dead()
    finally:
        await h.stop()
    return {"samples": samples, "counts": counts, "processes_alive": alive, "minutes": args.minutes}


def summary(result: dict[str, Any], warm_up: float) -> dict[str, Any]:
    samples = result["samples"]
    warm = next((s for s in samples if s["t"] >= warm_up), samples[0])
    last = samples[-1]
    hours = max(last["t"] - warm["t"], 1.0) / 3600
    growth = {name: (last["rss"][name] - warm["rss"][name]) / warm["rss"][name] for name in warm["rss"]}
    return {
        "warm_up_seconds": warm["t"],
        "rss_mib": {name: (warm["rss"][name] / 2**20, last["rss"][name] / 2**20) for name in warm["rss"]},
        "rss_growth": growth,
        "lag_max": max(s["lag"] for s in samples),
        "lag_last": last["lag"],
        "outbox_max": max(s["outbox_unpublished"] for s in samples),
        "inbox_rows_per_hour": (last["inbox_rows"] - warm["inbox_rows"]) / hours,
        "database_bytes_per_hour": (last["database_bytes"] - warm["database_bytes"]) / hours,
        "goals": {
            "no process grows more than 10 % after the warm-up": all(g <= 0.10 for g in growth.values()),
            "lag bounded (the last sample within the largest of the first half)": last["lag"]
            <= max([s["lag"] for s in samples[: len(samples) // 2 + 1]] + [1000.0]),
        },
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["t"] / 60 for s in samples]
    figure, (memory, lag) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name in samples[0]["rss"]:
        memory.plot(minutes, [s["rss"][name] / 2**20 for s in samples], label=name)
    memory.set_ylabel("resident MiB")
    memory.legend(fontsize=7, ncol=4)
    memory.set_title("modelbus soak: memory and consumer lag")
    lag.plot(minutes, [s["lag"] for s in samples], color="black")
    lag.set_ylabel("consumer lag (messages)")
    lag.set_xlabel("minutes of load")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)


def show(result: dict[str, Any], found: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's tables: each process's memory, then the load and what it left behind."""
    memory = table(
        "Resident memory per process",
        ["process", "RSS after warm-up MiB", "RSS at the end MiB", "growth"],
        [[name, round(warm), round(last), f"{found['rss_growth'][name]:+.1%}"]
         for name, (warm, last) in found["rss_mib"].items()],
    )  # fmt: skip
    counts = result["counts"]
    rows = [
        ["load", f"{counts['rows']:,} rows served, {counts['labels']:,} labels, {counts['lifecycles']} lifecycles, "
                 f"{counts['errors']} failed requests"],
        ["consumer lag, largest / last (messages)", f"{found['lag_max']:.0f} / {found['lag_last']:.0f}"],
        ["outbox, most unpublished rows", found["outbox_max"]],
        ["inbox rows per hour", round(found["inbox_rows_per_hour"])],
        ["database growth per hour", f"{found['database_bytes_per_hour'] / 2**20:,.1f} MiB"],
        ["processes alive at the end", "yes" if result["processes_alive"] else "NO"],
        *([goal, "met" if met else "NOT met"] for goal, met in found["goals"].items()),
    ]  # fmt: skip
    return [memory, table("Load and what it left behind", ["measure", "result"], rows)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rows-per-second", type=float, default=1000.0)
    parser.add_argument("--lifecycle-every", type=float, default=30.0, help="seconds between new dataset versions")
    parser.add_argument("--warm-up", type=float, default=5.0, help="minutes before memory growth is counted")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "results" / "soak.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelbus-soak-") as name:
        result = await soak(Settings(), args, Path(name))
    found = summary(result, args.warm_up * 60)
    tables = show(result, found)
    plot(result, args.plot)
    say(f"plotted {args.plot}")
    publish(args.out, "soak", f"Soak: {args.minutes:g} minutes of mixed load", tables,
            json.loads(json.dumps({**result, "summary": found}, default=str)))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
