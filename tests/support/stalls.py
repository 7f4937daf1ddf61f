"""Attacks that would stall or exhaust an HTTP edge (issue list of the hostile edges): hostile V2
shapes, a CSV of newlines, values that broke the protocol's error shape, trickled headers and
bodies, backtracking regular expressions. Each is replayed against the running platform while the
target's `/healthz` is polled every 20 ms; the outcome records the answer and the longest
`/healthz` took meanwhile, so the table shows how long the attack held the process's loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import httpx

from shared.ops.demo import FEATURES
from shared.ops.example_data import churn_frame
from shared.ops.platform import HEALTH_PORTS

if TYPE_CHECKING:
    from tests.support.hostile import Corpus

TRICKLERS = 100  # connections per trickling attack and target
GRACE_SECONDS = 3.0  # past the listener's timeout, for a busy machine


async def run(corpus: Corpus) -> None:
    """Every case of the phase, recorded on the corpus."""
    await bodies(corpus)
    await trickles(corpus)
    await regexes(corpus)


class Probe:
    """Polls a service's /healthz every 20 ms while an attack runs; the slowest answer."""

    def __init__(self, base: str) -> None:
        self.url = f"{base}/healthz"
        self.slowest = 0.0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                began = time.perf_counter()
                try:
                    (await http.get(self.url)).raise_for_status()
                except httpx.HTTPError:
                    self.failures += 1
                self.slowest = max(self.slowest, time.perf_counter() - began)
                await asyncio.sleep(0.02)

    async def __aenter__(self) -> Probe:
        self._task = asyncio.create_task(self._poll())
        await asyncio.sleep(0.1)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def __str__(self) -> str:
        failed = f", {self.failures} failed" if self.failures else ""
        return f"/healthz at most {self.slowest * 1000:.0f} ms{failed}"


async def bodies(corpus: Corpus) -> None:
    """Single requests whose parsing used to hold serving's loop, or answer 500."""
    infer = f"{corpus.serving}/v2/models/{corpus.model}/infer"
    invocations = f"{corpus.serving}/v1/models/{corpus.model}/invocations"
    limit = corpus.settings.serving_max_body_bytes
    row = churn_frame(1, seed=5)[FEATURES].astype(object).to_dict("records")[0]
    good = [
        {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
        for k, v in row.items()
    ]

    def tensor(**changed: object) -> bytes:
        return json.dumps({"inputs": [{**good[0], **changed}, *good[1:]]}).encode()

    wide = b'{"inputs": [{"name": "tenure_months", "datatype": "FP64", "data": [1], "shape": ['
    dims = (limit - len(wide) - 10) // 2
    cases: list[tuple[str, str, bytes, str, int, str]] = [
        ("V2 shape of 1,000 dimensions", infer, tensor(shape=[7] * 1000), "application/json", 400, "the limit is 8"),
        ("V2 shape of 30,000 dimensions", infer, tensor(shape=[7] * 30_000), "application/json", 413, "values"),
        (
            f"V2 shape of {dims:,} dimensions (the body limit)", infer,
            wide + b",".join([b"7"] * dims) + b"]}]}", "application/json", 413, "values",
        ),
        (
            "V2 shape whose product has 4,400 digits", infer, tensor(shape=[10**550] * 8), "application/json", 400,
            "non-negative int64",
        ),
        ('V2 "datatype": {}', infer, tensor(datatype={}), "application/json", 400, "unknown datatype"),
        ('V2 "datatype": []', infer, tensor(datatype=[]), "application/json", 400, "unknown datatype"),
        (
            'V2 "outputs": [{"name": {}}]', infer,
            json.dumps({"inputs": good, "outputs": [{"name": {}}]}).encode(), "application/json", 400,
            "string name",
        ),
        ('V2 "outputs": {}', infer, json.dumps({"inputs": good, "outputs": {}}).encode(), "application/json", 400,
         "outputs must be a list"),
        ("CSV body of 4 MiB of newlines", invocations, b"\n" * (limit - 1), "text/csv", 413, "blank lines"),
        (
            "CSV body of one row of 2,000,000 cells", invocations, b"tenure_months\n" + b"1," * ((limit - 20) // 2),
            "text/csv", 413, "values",
        ),
        (
            "CSV body of 2,000,000 one-cell rows", invocations, b"tenure_months\n" + b"1\n" * ((limit - 20) // 2),
            "text/csv", 413, "more than",
        ),
        ("empty CSV body", invocations, b"", "text/csv", 400, "empty"),
    ]  # fmt: skip
    async with httpx.AsyncClient(timeout=60) as http:
        for name, url, body, kind, status, phrase in cases:
            async with Probe(corpus.serving) as probe:
                began = time.perf_counter()
                try:
                    answer = await http.post(url, content=body, headers={"content-type": kind})
                    observed = f"{answer.status_code} {answer.text[:120]}"
                    passed = answer.status_code == status and phrase in answer.text
                    if url == infer:
                        passed = passed and list(answer.json()) == ["error"]
                except httpx.HTTPError as exc:
                    observed, passed = f"no answer: {exc!r}", False
                took = time.perf_counter() - began
            corpus.record(
                f"stall: {name}", "stall", f"{status} naming {phrase!r}, the loop free",
                f"{observed} (in {took * 1000:.0f} ms; {probe})", passed and probe.failures == 0,
            )  # fmt: skip


async def trickle(address: str, at_once: bytes, trickled: bytes) -> float:
    """One slow client: `at_once`, then a byte every 0.5 s; the seconds until the server closed."""
    host, port = address.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    began = time.monotonic()
    closed = asyncio.create_task(reader.read())  # b"" or a 408 once the server closes
    with contextlib.suppress(ConnectionError):
        writer.write(at_once)
        for byte in trickled:
            if closed.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.wait([closed], timeout=0.5)
    with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
        await asyncio.wait_for(closed, 60)
    writer.close()
    return time.monotonic() - began


async def trickles(corpus: Corpus) -> None:
    """A hundred connections trickling their headers, and a hundred their bodies, at every HTTP
    listener (serving, registry, alerter, monitor, console); the listener must close each within
    its timeout while normal requests go on."""
    settings = corpus.settings
    header = b"POST /v1/models/x:predict HTTP/1.1\r\nhost: modelbus\r\n" + b"x-padding: slowly\r\n" * 40 + b"\r\n"
    body_head = b"POST /v1/models/x:predict HTTP/1.1\r\nhost: modelbus\r\ncontent-length: 100000\r\n\r\n"
    console = f"http://127.0.0.1:{settings.console_port}"
    targets = (
        ("serving", corpus.serving),
        ("registry", corpus.registry),
        ("alerter", corpus.alerter),
        ("monitor", f"http://127.0.0.1:{HEALTH_PORTS['monitor']}"),
        ("console", console),
    )
    for target, base in targets:
        for kind, at_once, trickled, timeout in (
            ("headers", b"", header, settings.http_header_timeout_seconds),
            ("bodies", body_head, b"{" * 10_000, settings.http_body_timeout_seconds),
        ):
            async with Probe(base) as probe, httpx.AsyncClient(timeout=30) as http:
                slow = [asyncio.create_task(trickle(base, at_once, trickled)) for _ in range(TRICKLERS)]
                await asyncio.sleep(0.5)
                normal = [(await http.get(f"{base}/healthz")).status_code for _ in range(20)]
                held = await asyncio.gather(*slow)
            longest = max(held)
            corpus.record(
                f"stall: {TRICKLERS} connections trickling {kind} at {target}", "stall",
                f"each closed within the {timeout:.0f} s timeout, other requests answered",
                f"closed after {min(held):.1f}-{longest:.1f} s; {normal.count(200)}/20 other requests answered;"
                f" {probe}",
                longest <= timeout + GRACE_SECONDS and normal.count(200) == 20 and probe.failures == 0,
            )  # fmt: skip


async def regexes(corpus: Corpus) -> None:
    """A viewer's filter regex that backtracks exponentially in Python's `re`, and one that RE2
    refuses (a backreference), against the alerter's Alertmanager API."""
    alerts = f"{corpus.alerter}/api/v2/alerts"
    evil = 'model=~"(.*)*(.*)*(.*)*(.*)*(.*)*(.*)*[$]"'
    calls: list[tuple[str, Callable[[httpx.AsyncClient], Awaitable[httpx.Response]], int, str]] = [
        (
            "alerts filtered by a backtracking regex",
            lambda h: h.get(alerts, params={"filter": evil}, headers=corpus.auth("viewer")),
            200, "[",
        ),
        (
            "a silence with a backtracking regex",
            lambda h: h.post(
                f"{corpus.alerter}/api/v2/silences", headers=corpus.auth("operator"),
                json={"matchers": [{"name": "model", "value": "(.*)*(.*)*(.*)*x", "isRegex": True},
                                   {"name": "model", "value": corpus.model, "isRegex": False}],
                      "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
                      "createdBy": "hostile", "comment": "never matches, must not stall"},
            ),
            200, "silenceID",
        ),
        (
            "alerts filtered by a backreference",
            lambda h: h.get(alerts, params={"filter": r"model=~(a)\1"}, headers=corpus.auth("viewer")),
            400, "RE2",
        ),
        (
            "a silence whose matchers all match the empty string",
            lambda h: h.post(
                f"{corpus.alerter}/api/v2/silences", headers=corpus.auth("operator"),
                json={"matchers": [{"name": "model", "value": ".*", "isRegex": True}],
                      "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
                      "createdBy": "hostile", "comment": "mute everything"},
            ),
            400, "must not match the empty string",
        ),
    ]  # fmt: skip
    async with httpx.AsyncClient(timeout=60) as http:
        for name, call, status, phrase in calls:
            async with Probe(corpus.alerter) as probe:
                try:
                    answer = await call(http)
                    observed = f"{answer.status_code} {answer.text[:120]}"
                    passed = answer.status_code == status and phrase in answer.text
                except httpx.HTTPError as exc:
                    observed, passed = f"no answer: {exc!r}", False
            corpus.record(
                f"stall: {name}",
                "stall",
                f"{status} naming {phrase!r}, the loop free",
                f"{observed}; {probe}",
                passed and probe.failures == 0,
            )
