"""Network faults between the services and Kafka, PostgreSQL and S3, with toxiproxy (built by
scripts/bootstrap.sh from its Go module): every service reaches the three through toxiproxy,
and each fault is put on the wire while lifecycles run:

  - latency of 200 ms ± 50 on every connection to the three;
  - a bandwidth of 64 KB/s to S3 while models upload;
  - a 30 s blackhole of PostgreSQL for one service only (the evaluator reaches it through a proxy
    of its own);
  - the peers' connections to Kafka reset every few seconds for a minute.

Each must end with every lifecycle done, nothing lost or handled twice and every process alive;
the time from the fault's end until new data goes through is the recovery time.
bench/faults.py prints the figures (full profile); tests/e2e/test_cluster_faults.py asserts them
(short profile).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.ops.components import port_open
from shared.ops.kafka import Kafka
from shared.ops.platform import ROOT
from shared.runtime.settings import Settings
from tests.support.faults import Harness, begin_lifecycles, end_lifecycles, lifecycle_ends, probe, until

TOXIPROXY = ROOT / ".modelbus/bin/toxiproxy-server"
API_PORT = 18474
KAFKA_PORT, KAFKA_PROXY = 19192, 29192  # the faults' own Kafka, and where its clients reach it
POSTGRES_PROXY, POSTGRES_ALONE, S3_PROXY = 25432, 25433, 29000


@dataclass(frozen=True)
class Profile:
    """How long each fault lasts and how much runs through it."""

    lifecycles: int
    resets_for: float  # seconds of Kafka connection resets
    blackhole: float  # seconds of PostgreSQL blackhole for one service


PROFILES = {"short": Profile(2, 20.0, 30.0), "full": Profile(6, 60.0, 30.0)}


@dataclass
class Toxiproxy:
    """toxiproxy-server on loopback and its HTTP API."""

    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{API_PORT}"

    def start(self) -> None:
        if not TOXIPROXY.exists():
            raise RuntimeError(f"{TOXIPROXY} is missing: scripts/bootstrap.sh builds it (needs Go)")
        log = (self.folder / "toxiproxy.log").open("ab")
        self.process = subprocess.Popen(
            [str(TOXIPROXY), "-host", "127.0.0.1", "-port", str(API_PORT), "-seed", "7"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", API_PORT):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"toxiproxy did not start; see {self.folder / 'toxiproxy.log'}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def proxy(self, name: str, listen: int, upstream: int) -> None:
        """Route 127.0.0.1:`listen` to 127.0.0.1:`upstream`."""
        answer = httpx.post(
            f"{self.url}/proxies",
            json={"name": name, "listen": f"127.0.0.1:{listen}", "upstream": f"127.0.0.1:{upstream}", "enabled": True},
        )
        answer.raise_for_status()

    async def add(self, proxy: str, toxic: str, kind: str, stream: str = "downstream", **attributes: Any) -> None:
        """Put a toxic on a proxy (`stream`: downstream is server to client, upstream the other way)."""
        async with httpx.AsyncClient(base_url=self.url) as http:
            answer = await http.post(
                f"/proxies/{proxy}/toxics",
                json={"name": toxic, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes},
            )
            answer.raise_for_status()

    async def enable(self, proxy: str, enabled: bool) -> None:
        """Open or close a proxy: closed, it refuses connections and cuts the open ones."""
        async with httpx.AsyncClient(base_url=self.url) as http:
            answer = await http.post(f"/proxies/{proxy}", json={"enabled": enabled})
            answer.raise_for_status()

    async def remove(self, proxy: str, toxic: str) -> None:
        async with httpx.AsyncClient(base_url=self.url) as http:
            answer = await http.delete(f"/proxies/{proxy}/toxics/{toxic}")
            if answer.status_code != 404:
                answer.raise_for_status()


@contextlib.asynccontextmanager
async def behind_toxiproxy(base: Settings, folder: Path, say: Any = print) -> AsyncIterator[tuple[Harness, Toxiproxy]]:
    """A platform of seven processes that reaches Kafka (a node of its own, advertised at its
    proxy), PostgreSQL and S3 only through toxiproxy."""
    folder.mkdir(parents=True, exist_ok=True)
    toxiproxy = Toxiproxy(folder)
    toxiproxy.start()
    db = base.database_url
    db_port = int(db.rsplit("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    s3_port = int((base.s3_endpoint_url or "http://127.0.0.1:9000").rsplit(":", 1)[1].rstrip("/"))
    toxiproxy.proxy("kafka", KAFKA_PROXY, KAFKA_PORT)
    toxiproxy.proxy("postgres", POSTGRES_PROXY, db_port)
    toxiproxy.proxy("postgres-alone", POSTGRES_ALONE, db_port)
    toxiproxy.proxy("s3", S3_PROXY, s3_port)
    kafka_settings = Settings(stack_dir=folder / "kafka-stack", kafka_bootstrap=f"127.0.0.1:{KAFKA_PORT}")
    kafka = Kafka("kafka", kafka_settings, say, advertised_port=KAFKA_PROXY)
    kafka.home.mkdir(parents=True, exist_ok=True)
    try:
        await asyncio.to_thread(kafka.start)
        proxied = base.model_copy(
            update={
                "kafka_bootstrap": f"127.0.0.1:{KAFKA_PROXY}",
                "database_url": db.replace(f":{db_port}/", f":{POSTGRES_PROXY}/"),
                "s3_endpoint_url": f"http://127.0.0.1:{S3_PROXY}",
            }
        )
        h = Harness(proxied, folder / "platform", say=say)
        h.env |= {
            "MODELBUS_KAFKA_BOOTSTRAP": proxied.kafka_bootstrap,
            "MODELBUS_DATABASE_URL": proxied.database_url,
            "MODELBUS_S3_ENDPOINT_URL": proxied.s3_endpoint_url or "",
        }
        await h.start()
        try:
            yield h, toxiproxy
        finally:
            await h.stop()
    finally:
        await asyncio.to_thread(kafka.stop)
        toxiproxy.stop()


@dataclass
class FaultReport:
    """One network fault: what ran through it and how the platform came back."""

    fault: str
    lasted_seconds: float
    lifecycles: int
    completed: int
    outcomes: dict[str, int]
    missing: dict[str, int]
    duplicates: dict[str, int]
    processes_alive: bool
    recovered_seconds: float | None
    detail: dict[str, Any] = field(default_factory=dict)


async def _finish(h: Harness, name: str, models: list[str], lasted: float, detail: dict[str, Any]) -> FaultReport:
    """After a fault: time until new data goes through, then wait for the lifecycles and count."""
    recovered = await probe(h, timeout=180)
    outcomes, report = await end_lifecycles(h, models, timeout=600)
    dead = h.platform.dead()
    h.say(f"[toxiproxy] {name}: {sum(outcomes.values())}/{len(models)} ended {outcomes}; recovered in {recovered} s")
    return FaultReport(
        fault=name,
        lasted_seconds=round(lasted, 1),
        lifecycles=len(models),
        completed=sum(outcomes.values()),
        outcomes=outcomes,
        missing=report.missing,
        duplicates=report.duplicates,
        processes_alive=not dead,
        recovered_seconds=None if recovered is None else round(recovered, 2),
        detail=detail | ({"exited": dead} if dead else {}),
    )


async def _lifecycles_under(h: Harness, slug: str, count: int) -> tuple[list[str], float]:
    """Run `count` lifecycles to their end (under whatever toxics are on); their names and the time."""
    began = time.monotonic()
    models = await begin_lifecycles(h, count, slug)

    async def ended() -> bool:
        return set(await lifecycle_ends(h)) >= set(models)

    await until(ended, timeout=600, every=3)
    return models, time.monotonic() - began


async def latency(h: Harness, toxiproxy: Toxiproxy, profile: Profile) -> FaultReport:
    """200 ms ± 50 per round trip (100 ± 25 each way) on every connection to Kafka, PostgreSQL and
    S3, for as long as the lifecycles take."""
    toxics = [(proxy, stream) for proxy in ("kafka", "postgres", "s3") for stream in ("downstream", "upstream")]
    for proxy, stream in toxics:
        await toxiproxy.add(proxy, f"latency-{stream}", "latency", stream, latency=100, jitter=25)
    try:
        models, took = await _lifecycles_under(h, "slow", profile.lifecycles)
    finally:
        for proxy, stream in toxics:
            await toxiproxy.remove(proxy, f"latency-{stream}")
    return await _finish(h, "Latency 200 ms ± 50", models, took, {"lifecycles_took_seconds": round(took, 1)})


async def slow_uploads(h: Harness, toxiproxy: Toxiproxy, profile: Profile) -> FaultReport:
    """64 KB/s to and from S3 for as long as the lifecycles take (datasets down, models up)."""
    for stream in ("upstream", "downstream"):
        await toxiproxy.add("s3", f"bandwidth-{stream}", "bandwidth", stream, rate=64)
    try:
        models, took = await _lifecycles_under(h, "narrow", profile.lifecycles)
    finally:
        for stream in ("upstream", "downstream"):
            await toxiproxy.remove("s3", f"bandwidth-{stream}")
    return await _finish(h, "Bandwidth 64 KB/s to S3", models, took, {"lifecycles_took_seconds": round(took, 1)})


async def database_blackhole(
    h: Harness, toxiproxy: Toxiproxy, profile: Profile, service: str = "evaluator"
) -> FaultReport:
    """PostgreSQL swallows everything `service` sends, both ways, for `profile.blackhole` seconds
    (its connections hang; the other services' do not), while lifecycles need it."""
    process = h.platform.running[service][0]
    alone = h.settings.database_url.replace(f":{POSTGRES_PROXY}/", f":{POSTGRES_ALONE}/")
    process.env["MODELBUS_DATABASE_URL"] = alone
    h.platform.restart(service)
    await h.platform.wait_ready()
    for stream in ("upstream", "downstream"):
        await toxiproxy.add("postgres-alone", f"blackhole-{stream}", "timeout", stream, timeout=0)
    began = time.monotonic()
    try:
        models = await begin_lifecycles(h, profile.lifecycles, "hole")
        await asyncio.sleep(max(0.0, profile.blackhole - (time.monotonic() - began)))
    finally:
        for stream in ("upstream", "downstream"):
            await toxiproxy.remove("postgres-alone", f"blackhole-{stream}")
    lasted = time.monotonic() - began
    return await _finish(h, f"PostgreSQL blackhole for the {service}", models, lasted, {"service": service})


async def kafka_resets(h: Harness, toxiproxy: Toxiproxy, profile: Profile) -> FaultReport:
    """Every connection to Kafka reset (TCP RST) every 5 s for `profile.resets_for` seconds, while
    lifecycles run."""
    began = time.monotonic()
    models = await begin_lifecycles(h, profile.lifecycles, "reset")
    resets = 0
    while time.monotonic() - began < profile.resets_for:
        await toxiproxy.add("kafka", "reset", "reset_peer", "downstream", timeout=0)
        await asyncio.sleep(0.5)
        await toxiproxy.remove("kafka", "reset")
        resets += 1
        await asyncio.sleep(4.5)
    lasted = time.monotonic() - began
    name = f"Kafka connections reset every 5 s for {profile.resets_for:.0f} s"
    return await _finish(h, name, models, lasted, {"resets": resets})


def environment_note() -> str:
    """Where the proxies listen (for the bench's header)."""
    return (
        f"toxiproxy API {API_PORT}; Kafka {KAFKA_PROXY}→{KAFKA_PORT}, PostgreSQL {POSTGRES_PROXY} "
        f"(the blackholed service {POSTGRES_ALONE}), S3 {S3_PROXY}; pid {os.getpid()}"
    )
