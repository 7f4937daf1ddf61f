"""What the benchmark scripts share: output, ports, the `hey` load generator; the peers' virtualenvs
come from tests.support.venvs. Run a benchmark from the project's folder as `python -m bench.NAME`."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from shared.ops import credentials
from shared.ops.benchmarks import shown
from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".modelbus" / "bench"
HEY_VERSION = "v0.1.4"
VEGETA_VERSION = "v12.12.0"
# Benchmarks make topics of their own and start platforms (each service its own principal): they
# use the local stack as its admin.
credentials.adopt("admin")


def say(line: str) -> None:
    """Print a progress or result line at once."""
    print(line, flush=True)


def table(title: str, columns: list[str], rows: list[list[Any]], note: str = "") -> dict[str, Any]:
    """Print a table, aligned, and return it as `publish` writes it (the docs' results page)."""
    cells = [[shown(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(columns)]
    say("")
    say(title)
    say("  ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(columns, widths, strict=True))))
    say("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in cells:
        say("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    if note:
        say(note)
    return {"title": title, "columns": columns, "rows": rows, "note": note}


def publish(out: Path, benchmark: str, title: str, tables: list[dict[str, Any]], data: Any) -> None:
    """Write a run's results where the docs' results page reads them: its tables, the command that
    made them, the date and the machine, and the raw figures."""
    from shared.ops.benchmarks import document

    command = " ".join(["python -m", f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document(benchmark, title, command, tables, data), indent=2) + "\n")
    say(f"\nwrote {out} (`modelbus docs generate` puts it on the results page)")


def fresh_platform(kind: str) -> tuple[str, Settings, Path]:
    """A benchmark run's own topic prefix (its catalog created) and scratch folder: (the run's
    suffix, the settings, the folder)."""
    import asyncio
    import tempfile
    import uuid

    from shared.runtime.broker import ensure_topics

    suffix = uuid.uuid4().hex[:6]
    settings = Settings().model_copy(update={"topic_prefix": f"bench-{suffix}"})
    asyncio.run(ensure_topics(settings))
    return suffix, settings, Path(tempfile.mkdtemp(prefix=f"modelbus-bench-{kind}-"))


def fit_model(name: str, spec: Any, data: Path, folder: Path) -> Any:
    """A benchmark model (`spec`) fitted on the CSV `data` by the trainer's own code
    (services.trainer.fit, into `folder/name`), or exit saying why it failed; its Outcome."""
    from services.trainer import fit

    say(f"[bench] training {name} …")
    outcome = fit.train(fit.Job(name, spec, str(data), "csv", "0" * 64, str(folder / name), "bench"))
    if not outcome.ok:
        raise SystemExit(f"training {name} failed: {outcome.reason}")
    return outcome


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hey_binary() -> str:
    """The `hey` load generator, built from the Go module proxy if it is not there yet."""
    found = shutil.which("hey") or (str(BENCH / "bin" / "hey") if (BENCH / "bin" / "hey").exists() else None)
    if found:
        return found
    say(f"[bench] installing hey {HEY_VERSION} with go install …")
    env = {**os.environ, "GOBIN": str(BENCH / "bin")}
    subprocess.run(["go", "install", f"github.com/rakyll/hey@{HEY_VERSION}"], env=env, check=True)
    return str(BENCH / "bin" / "hey")


def hey(
    url: str,
    *,
    concurrency: int,
    requests: int | None = None,
    seconds: float | None = None,
    headers: dict[str, str] | None = None,
    body: str | None = None,
) -> dict[str, float]:
    """Run hey for a number of requests or a duration; requests/s, p50 and p99 in ms, share of non-200."""
    command = [hey_binary(), "-c", str(concurrency), "-o", "csv"]
    command += ["-z", f"{seconds}s"] if seconds is not None else ["-n", str(requests)]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if body is not None:
        command += ["-m", "POST", "-T", "application/json", "-d", body]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(output)))
    if not rows:
        raise SystemExit(f"hey made no request to {url}")
    latencies = sorted(float(r["response-time"]) * 1000 for r in rows)
    elapsed = max(float(r["offset"]) + float(r["response-time"]) for r in rows)
    errors = sum(1 for r in rows if r["status-code"] != "200")
    return {
        "requests": len(rows),
        "ops_per_s": len(rows) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "error_share": errors / len(rows),
    }


def go_tool(name: str, module: str, version: str) -> str:
    """A Go load generator, built from the Go module proxy into .modelbus/bench/bin if it is not there yet."""
    found = shutil.which(name) or (str(BENCH / "bin" / name) if (BENCH / "bin" / name).exists() else None)
    if found:
        return found
    say(f"[bench] installing {name} {version} with go install …")
    env = {**os.environ, "GOBIN": str(BENCH / "bin")}
    subprocess.run(["go", "install", f"{module}@{version}"], env=env, check=True)
    return str(BENCH / "bin" / name)


def vegeta(
    url: str,
    *,
    concurrency: int,
    seconds: float,
    body: str,
    folder: Path,
    more: list[tuple[str, str]] | None = None,
) -> dict[str, float]:
    """POST `body` with vegeta's closed loop (`concurrency` workers, each waiting for its answer);
    with `more` (URL, body) targets, the requests go round them all.

    Latencies are measured to the nanosecond (hey rounds to 0.1 ms, too coarse for sub-millisecond
    servers). Returns requests/s (successful), p50 and p99 in ms, and the share of non-2xx answers.
    """
    binary = go_tool("vegeta", "github.com/tsenart/vegeta/v12", VEGETA_VERSION)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (target, text) in enumerate([(url, body), *(more or [])]):
        payload = folder / f"body-{index}.json"
        payload.write_text(text)
        lines.append(f"POST {target}\nContent-Type: application/json\n@{payload}\n")
    targets = folder / "targets.txt"
    targets.write_text("\n".join(lines))
    attack = subprocess.run(
        [
            binary,
            "attack",
            f"-targets={targets}",
            "-rate=0",
            f"-workers={concurrency}",
            f"-max-workers={concurrency}",
            f"-duration={seconds}s",
            "-timeout=30s",
        ],
        capture_output=True,
        check=True,
    )
    report = subprocess.run([binary, "report", "-type=json"], input=attack.stdout, capture_output=True, check=True)
    found = json.loads(report.stdout)
    latencies = found["latencies"]
    return {
        "requests": found["requests"],
        "ops_per_s": found["throughput"],
        "p50_ms": latencies["50th"] / 1e6,
        "p99_ms": latencies["99th"] / 1e6,
        "mean_ms": latencies["mean"] / 1e6,
        "error_share": 1 - found["success"],
    }


def wait_http(url: str, *, timeout: float, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until `url` answers below 500; exit naming `what` if it does not (or its process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} did not answer {url} within {timeout} s")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children."""
    total = 0
    for line in subprocess.run(["ps", "-o", "pid=,ppid=,rss="], capture_output=True, text=True).stdout.splitlines():
        fields = line.split()
        if len(fields) == 3 and (int(fields[0]) == pid or int(fields[1]) == pid):
            total += int(fields[2]) * 1024
    return total


@contextmanager
def serving_platform(
    env: dict[str, str], folder: Path, ready: Callable[[list[str]], bool], *, timeout: float, what: str, logs: str = ""
) -> Iterator[tuple[str, dict[str, subprocess.Popen[bytes]]]]:
    """The deployer and serving as processes (serving on MODELBUS_SERVING_PORT of `env`), until
    `ready(models serving reports loaded)` holds; yields (serving's base URL, the processes), and
    stops them after."""
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=env, stderr=(folder / f"{logs}{name}.log").open("w")
        )
        for name, module in (("deployer", "services.deployer"), ("serving", "services.deployer.serving"))
    }
    base = f"http://127.0.0.1:{env['MODELBUS_SERVING_PORT']}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = httpx.get(f"{base}/readyz", timeout=5)
                if answer.status_code == 200 and ready(answer.json()["models"]):
                    break
            except httpx.TransportError:
                pass
            if processes["serving"].poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serving did not load {what}; see {folder / f'{logs}serving.log'}")
            time.sleep(0.5)
        yield base, processes
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=30)
