"""`modelbus up`: the six services and serving as separate processes on the local stack, with a
compact live view of the lifecycle events.

Each process is `python -m services.<name>`, logs to `<stack_dir>/logs/<name>.log`, and is ready
when its `/readyz` answers 200 (the trainer, evaluator, deployer and monitor answer theirs on
`MODELBUS_HEALTH_PORT`, which `up` sets).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer

from shared.contract import topics
from shared.contract.envelope import Envelope, EnvelopeError, decode
from shared.contract.events import (
    AlertRaised,
    AlertResolved,
    CanaryAnalyzed,
    DataArrived,
    DeadLettered,
    DriftDetected,
    Event,
    ModelEvaluated,
    ModelRegistered,
    ModelSpecApplied,
    ModelTrained,
    PerformanceDegraded,
    RetrainRequested,
    RetrainSkipped,
    RolloutChanged,
    TrainingFailed,
    TrainingStarted,
)
from shared.contract.topics import Principal
from shared.ops import credentials
from shared.runtime.broker import aiokafka_options
from shared.runtime.settings import Settings

Say = Callable[[str], None]
ROOT = Path(__file__).resolve().parents[2]
# Where `up` puts the services without an API of their own (their /healthz, /readyz, /metrics).
HEALTH_PORTS = {"trainer": 8083, "evaluator": 8084, "deployer": 8085, "monitor": 8086}
# The lifecycle topics the live view follows (not predictions or labels: too many).
FOLLOWED = (
    topics.DATA_ARRIVED,
    topics.MODEL_SPEC_APPLIED,
    topics.TRAINING_STARTED,
    topics.MODEL_TRAINED,
    topics.TRAINING_FAILED,
    topics.MODEL_REGISTERED,
    topics.MODEL_EVALUATED,
    topics.ROLLOUT_CHANGED,
    topics.CANARY_ANALYZED,
    topics.DRIFT_DETECTED,
    topics.PERFORMANCE_DEGRADED,
    topics.RETRAIN_REQUESTED,
    topics.RETRAIN_SKIPPED,
    topics.ALERTS,
    topics.DEAD_LETTER,
)


class PlatformError(RuntimeError):
    """The platform could not start; the message says which process and why."""


@dataclass(frozen=True)
class ServiceProcess:
    """How to run one service and where it answers."""

    name: str
    module: str
    port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def processes(settings: Settings) -> list[ServiceProcess]:
    """The platform's processes, in start order; on the local stack each is its own principal (on a
    broker the settings name PLAINTEXT, as bench/sasl.py's baseline, none is)."""
    local = credentials.present(settings)
    sasl = settings.kafka_security_protocol != "PLAINTEXT"

    def env(name: Principal) -> dict[str, str]:
        health = {"MODELBUS_HEALTH_PORT": str(HEALTH_PORTS[name])} if name in HEALTH_PORTS else {}
        return {**health, **(credentials.principal_env(settings, name, kafka=sasl) if local else {})}

    return [
        ServiceProcess("registry", "services.registry", settings.registry_port, env("registry")),
        ServiceProcess("trainer", "services.trainer", HEALTH_PORTS["trainer"], env("trainer")),
        ServiceProcess("evaluator", "services.evaluator", HEALTH_PORTS["evaluator"], env("evaluator")),
        ServiceProcess("deployer", "services.deployer", HEALTH_PORTS["deployer"], env("deployer")),
        ServiceProcess("serving", "services.deployer.serving", settings.serving_port, env("serving")),
        ServiceProcess("monitor", "services.monitor", HEALTH_PORTS["monitor"], env("monitor")),
        ServiceProcess("alerter", "services.alerter", settings.alerter_port, env("alerter")),
    ]


def console_process(settings: Settings) -> ServiceProcess:
    """The console: not one of the platform's services, a client of their APIs that `up` and the
    demo start beside them (no bus credentials: it reads and acts through the APIs alone)."""
    return ServiceProcess("console", "shared.ops.console", settings.console_port, {})


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Platform:
    """The processes `up` started: start them, wait for them, show them, stop them."""

    settings: Settings
    say: Say
    extra_env: dict[str, str] = field(default_factory=dict)
    console: bool = False
    running: dict[str, tuple[ServiceProcess, subprocess.Popen[bytes]]] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.settings.stack_dir / "logs"

    def start(self) -> None:
        """Start every process; refuse if one's port is taken (another platform is up)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        plan = processes(self.settings) + ([console_process(self.settings)] if self.console else [])
        taken = [f"{p.name} ({p.port})" for p in plan if _port_taken(p.port)]
        if taken:
            raise PlatformError(
                f"ports in use: {', '.join(taken)}; is modelbus already up? Stop it, or set MODELBUS_*_PORT"
            )
        for process in plan:
            popen = self.launch(process)
            self.say(f"[up] {process.name:<9} pid {popen.pid:<7} {process.url}  log {self.logs / process.name}.log")

    def launch(self, process: ServiceProcess) -> subprocess.Popen[bytes]:
        """Start one process (its log appended to); it replaces any earlier one of that name.
        On the local stack it inherits no Kafka credentials from this process: only its own, if any."""
        local = credentials.present(self.settings)
        inherited = {k: v for k, v in os.environ.items() if not (local and k in credentials.VARIABLES)}
        env = {**inherited, **self.extra_env, **process.env}
        log = (self.logs / f"{process.name}.log").open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", process.module],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches `up`, which stops them in order
        )
        self.running[process.name] = (process, popen)
        return popen

    def kill(self, name: str) -> None:
        """SIGKILL one process (no clean shutdown: what a crash or an OOM kill does)."""
        _, popen = self.running[name]
        if popen.poll() is None:
            popen.kill()
            popen.wait()

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Kill a process if it runs, and start it again, as a supervisor would."""
        self.kill(name)
        return self.launch(self.running[name][0])

    async def wait_ready(self, timeout: float = 180.0) -> None:
        """Wait until every process's /readyz answers 200; PlatformError if one exits or stalls."""
        began = time.monotonic()
        waiting = dict(self.running)
        async with httpx.AsyncClient(timeout=2) as http:
            while waiting:
                for name, (process, popen) in list(waiting.items()):
                    if popen.poll() is not None:
                        raise PlatformError(f"{name} exited with {popen.returncode}:\n{self.tail(name)}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{process.url}/readyz")).status_code == 200:
                            self.say(f"[up] {name:<9} ready ({time.monotonic() - began:.1f} s)")
                            del waiting[name]
                if time.monotonic() - began > timeout:
                    name, (process, _) = next(iter(waiting.items()))
                    answer = "no answer"
                    with contextlib.suppress(httpx.HTTPError):
                        answer = (await http.get(f"{process.url}/readyz")).text[:500]
                    stalled = ", ".join(waiting)
                    raise PlatformError(
                        f"not ready after {timeout:.0f} s: {stalled}; {name}/readyz: {answer}\n{self.tail(name)}"
                    )
                await asyncio.sleep(0.3)

    def tail(self, name: str, lines: int = 15) -> str:
        """The last lines of a process's log."""
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])

    def status(self) -> None:
        """One line per process."""
        for name, (process, popen) in self.running.items():
            state = "running" if popen.poll() is None else f"exited ({popen.returncode})"
            self.say(f"  {name:<9} pid {popen.pid:<7} {state:<12} {process.url}")

    def dead(self) -> list[str]:
        """Processes that have exited."""
        return [name for name, (_, popen) in self.running.items() if popen.poll() is not None]

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every process (last started first), then SIGKILL what is left after `timeout`."""
        for _, popen in reversed(list(self.running.values())):
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, (_, popen) in self.running.items():
            try:
                popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
                self.say(f"[up] {name} did not stop in {timeout:.0f} s; killed")
        self.say(f"[up] stopped {len(self.running)} processes")
        self.running.clear()


# ---------------------------------------------------------------- the live view


def describe(event: Event) -> str | None:
    """One compact line for a lifecycle event (None: not worth a line)."""
    model = getattr(event, "model", "")
    match event:
        case DataArrived():
            return f"data       {event.dataset} {event.version} ({event.row_count or '?'} rows) {event.uri}"
        case ModelSpecApplied():
            return f"spec       {model} revision {event.revision} by {event.applied_by}"
        case TrainingStarted():
            return f"training   {model} {event.run_id} ({event.trigger}, {len(event.candidates)} candidates)"
        case ModelTrained():
            shown = ("accuracy", "roc_auc", "f1", "rmse", "mae", "r2")
            metrics = " ".join(f"{k}={event.metrics[k]:.3f}" for k in shown if k in event.metrics)
            estimator = event.estimator.rsplit(".", 1)[-1]
            return f"trained    {model} {event.run_id} {estimator} {metrics} in {event.training_seconds:.1f} s"
        case TrainingFailed():
            return f"FAILED     {model} {event.run_id} at {event.stage}: {event.reason[:160]}"
        case ModelRegistered():
            return f"registered {model} v{event.version} ({event.run_id})"
        case ModelEvaluated():
            gates = " ".join(f"{g.name}{'✓' if g.passed else '✗'}" for g in event.gates)
            against = f" vs v{event.champion_version}" if event.champion_version else ""
            return f"evaluated  {model} v{event.version}{against}: {event.decision} [{gates}]"
        case RolloutChanged():
            split = " ".join(f"v{t.version}:{t.percent:g}%" for t in event.traffic)
            moved = f"{event.from_state} → {event.to_state}"
            return f"rollout    {model} v{event.candidate_version} {moved} [{split}] {event.reason[:120]}"
        case CanaryAnalyzed():
            return f"canary     {model} v{event.candidate_version}: {event.verdict} ({event.reason[:140]})"
        case DriftDetected():
            drifted = ", ".join([f.feature for f in event.features if f.drifted][:6]) or "the prediction"
            return f"DRIFT      {model} v{event.version}: {drifted} ({event.rows} rows, {event.severity})"
        case PerformanceDegraded():
            measured = "estimated " if event.estimated else ""
            return (
                f"DEGRADED   {model} v{event.version}: {measured}{event.metric} {event.value:.3f}"
                f" (baseline {event.baseline:.3f})"
            )
        case RetrainRequested():
            on = f" on {event.dataset_version}" if event.dataset_version else ""
            return f"retrain    {model} asked by {event.requested_by} ({event.reason}){on}"
        case RetrainSkipped():
            return f"skipped    {model} v{event.version} retrain on {event.asked_for}: {event.reason[:140]}"
        case AlertRaised():
            summary = event.annotations.get("summary", "")[:140]
            return f"ALERT      {event.labels.get('kind', '')} {model} → notified: {summary}"
        case AlertResolved():
            return f"resolved   {event.labels.get('kind', '')} {model}: {event.reason[:140]}"
        case DeadLettered():
            return f"DEAD       {event.consumer} refused a message of {event.original_topic}: {event.reason[:140]}"
    return None


class Follower:
    """Reads the lifecycle topics from now on (no consumer group: it commits nothing)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = AIOKafkaConsumer(*(settings.topic(t) for t in FOLLOWED), **aiokafka_options(settings))

    async def start(self) -> None:
        """Join, and start at the end of every partition (only what happens from now on)."""
        await self.consumer.start()
        deadline = time.monotonic() + 30
        while not self.consumer.assignment():
            if time.monotonic() > deadline:
                raise PlatformError("could not follow the lifecycle topics: no partitions assigned in 30 s")
            await asyncio.sleep(0.1)
        await self.consumer.seek_to_end()
        for partition in self.consumer.assignment():
            await self.consumer.position(partition)

    async def envelopes(self, timeout: float = 0.5) -> list[Envelope]:
        """The events that arrived since the last call (waiting up to `timeout`), with their envelopes."""
        batch = await self.consumer.getmany(timeout_ms=int(timeout * 1000))
        found = []
        for record in sorted((r for rs in batch.values() for r in rs), key=lambda r: r.timestamp):
            with contextlib.suppress(EnvelopeError):
                found.append(decode(record.value, list(record.headers or ())))
        return found

    async def stop(self) -> None:
        await self.consumer.stop()


def console_access(settings: Settings) -> tuple[dict[str, str], str]:
    """The environment that lets a person into the console, and how to say so. With no
    MODELBUS_API_TOKENS, a local admin token is made once and kept in .modelbus/console-token."""
    url = f"{settings.console_url.rstrip('/')}/"
    if settings.api_tokens.get_secret_value():
        return {}, f"console: {url} (log in with a token from MODELBUS_API_TOKENS)"
    kept = settings.stack_dir / "console-token"
    if not kept.exists():
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(secrets.token_urlsafe(24) + "\n")
        kept.chmod(0o600)
    token = kept.read_text().strip()
    return {
        "MODELBUS_API_TOKENS": f"{token}=admin:local"
    }, f"console: {url} (log in with the token {token}, kept in {kept})"


async def run_up(settings: Settings, say: Say) -> int:
    """`modelbus up`: start the stack and the platform, follow the lifecycle until Ctrl-C."""
    from shared.ops import stack

    await asyncio.to_thread(stack.up, settings, say)
    settings = credentials.local(settings, "admin")  # the follower reads every lifecycle topic
    access, console = console_access(settings)
    platform = Platform(settings, say, extra_env=access, console=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        platform.start()
        await platform.wait_ready()
        say("[up] the platform is up:")
        platform.status()
        say(f"[up] {console}")
        say("[up] following the lifecycle (Ctrl-C stops everything `up` started)")
        follower = Follower(settings)
        await follower.start()
        try:
            while not stopping.is_set():
                for envelope in await follower.envelopes():
                    line = describe(envelope.event)
                    if line:
                        say(f"{time.strftime('%H:%M:%S')} {line}")
                gone = platform.dead()
                if gone:
                    say(f"[up] {', '.join(gone)} exited; last lines:\n{platform.tail(gone[0])}")
                    return 1
        finally:
            await follower.stop()
        return 0
    except PlatformError as exc:
        say(f"[up] {exc}")
        return 1
    finally:
        platform.stop()
