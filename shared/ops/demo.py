"""`modelbus demo`: the mission in one command.

Starts the platform as `modelbus up` does, applies the example spec (as a new model, with demo
timings) and publishes its first dataset; follows it trained → registered → evaluated →
promoted while driving labelled traffic at serving; then the world moves: the traffic shifts and
the producer's fresh data arrives (kept for the next retrain: the demo's spec does not train on
every new dataset), the monitor detects drift, the alerter notifies, the monitor asks for a
retrain, and the new version goes through its evaluation and canary to promotion or rollback.
Ends with a summary; a stage that stalls past its timeout exits 1 naming it and the last event.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from shared.contract.envelope import Envelope
from shared.contract.events import (
    AlertRaised,
    DataArrived,
    DriftDetected,
    Event,
    Label,
    LabelsArrived,
    ModelEvaluated,
    ModelRegistered,
    ModelTrained,
    RetrainRequested,
    RolloutChanged,
    TrainingFailed,
    TrainingStarted,
)
from shared.contract.spec import ModelSpec
from shared.ops import credentials
from shared.ops.example_data import churn_frame
from shared.ops.platform import Follower, Platform, PlatformError, Say, describe
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec
from shared.runtime.telemetry import make_tracer_provider

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["customer_id", "tenure_months", "monthly_charges", "support_calls", "plan", "region", "senior"]
SHIFT = 0.6  # how far the world moves (as `modelbus example-data --shift`)
ENDED = ("promoted", "rolled-back")


# The demo's alerting: the default receiver (the alerts topic and the log), notified within seconds.
DEMO_ALERTING = """\
route:
  receiver: ops
  group_by: [model, kind]
  group_wait: 2s
  group_interval: 30s
  repeat_interval: 1h
receivers:
  - name: ops
    kafka: {topic: alerts}
    log: true
"""


class Stalled(Exception):
    """A stage did not happen within its timeout."""


@dataclass(frozen=True)
class Timings:
    """How long each stage may take, and the demo spec's pace."""

    training: float = 600.0
    step: float = 240.0
    drift: float = 240.0
    rows_per_second: float = 250.0
    bake_seconds: float = 5.0
    window_rows: int = 500
    window_seconds: float = 15.0


def demo_spec(model: str, timings: Timings) -> ModelSpec:
    """The example spec as a new model, with the demo's pace: short bakes and windows, and a
    retrain only when the monitor asks (new data waits for it)."""
    example = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())
    rollout = example.rollout.model_copy(update={"steps": [10.0, 50.0, 100.0], "bake_seconds": timings.bake_seconds})
    monitoring = example.monitoring.model_copy(
        update={
            "window_rows": timings.window_rows,
            "window_seconds": timings.window_seconds,
            "retrain_on": ["drift", "performance"],
        }
    )
    return example.model_copy(update={"model": model, "dataset": model, "rollout": rollout, "monitoring": monitoring})


@dataclass
class Stage:
    """A stage's name, when it ended and what it saw."""

    name: str
    seconds: float
    detail: str


@dataclass
class Demo:
    """One run of the demo."""

    settings: Settings
    say: Say
    timings: Timings = field(default_factory=Timings)
    model: str = field(default_factory=lambda: f"churn-{uuid.uuid4().hex[:6]}")
    token: str = field(default_factory=lambda: f"demo-{secrets.token_hex(12)}")
    stages: list[Stage] = field(default_factory=list)
    last: str = "nothing yet"
    seen: list[Envelope] = field(default_factory=list)
    unmatched: list[Envelope] = field(default_factory=list)
    repeated: tuple[Any, int] = (None, 0)
    shift: float = 0.0
    served: int = 0
    labelled: int = 0
    began: float = field(default_factory=time.monotonic)
    mark: float = field(default_factory=time.monotonic)

    # ------------------------------------------------------------ following

    async def expect(self, follower: Follower, stage: str, wanted: Callable[[Event], bool], timeout: float) -> Envelope:
        """The first event, seen or to come, that is `wanted` (printing each new event as it comes);
        Stalled after `timeout` seconds. Events that came while waiting for another stage stay
        available to the stages after it."""
        for index, envelope in enumerate(self.unmatched):
            if wanted(envelope.event):
                del self.unmatched[index]
                return self._reached(stage, envelope)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for envelope in await follower.envelopes():
                event = envelope.event
                if getattr(event, "model", self.model) not in (self.model, "-"):
                    continue
                self.seen.append(envelope)
                self._show(event)
                if isinstance(event, TrainingFailed):
                    raise Stalled(f"{stage}: training failed: {event.reason}")
                self.unmatched.append(envelope)
            for index, envelope in enumerate(self.unmatched):
                if wanted(envelope.event):
                    del self.unmatched[index]
                    return self._reached(stage, envelope)
        raise Stalled(f"stage '{stage}' did not happen within {timeout:.0f} s; last event seen: {self.last}")

    def _reached(self, stage: str, envelope: Envelope) -> Envelope:
        now = time.monotonic()
        self.stages.append(Stage(stage, now - self.mark, describe(envelope.event) or envelope.type))
        self.mark = now
        return envelope

    def _show(self, event: Event) -> None:
        """Print an event's line; a drift window like the one before is counted, not printed."""
        line = describe(event)
        if not line:
            return
        self.last = line
        if isinstance(event, DriftDetected):
            key = (event.version, tuple(f.feature for f in event.features if f.drifted))
            if key == self.repeated[0]:
                self.repeated = (key, self.repeated[1] + 1)
                return
            self.repeated = (key, 0)
        elif self.repeated[1]:
            self.say(f"  {'':>7}  (and {self.repeated[1]} more windows drifting the same way)")
            self.repeated = (None, 0)
        self.say(f"  {time.monotonic() - self.began:6.1f}s  {line}")

    # ------------------------------------------------------------ traffic

    async def drive(self, stop: asyncio.Event) -> None:
        """Labelled traffic at serving: batches of rows, then their true labels as LabelsArrived."""
        url = f"http://127.0.0.1:{self.settings.serving_port}/v1/models/{self.model}:predict"
        bus = Bus(self.settings.model_copy(update={"service_name": "demo-traffic"}))
        await bus.start()
        batch, seed = 25, 1000
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                while not stop.is_set():
                    began = time.monotonic()
                    seed += 1
                    frame = churn_frame(batch, seed=seed, shift=self.shift)
                    rows = frame[FEATURES].astype(object).where(frame[FEATURES].notna(), None).to_dict("records")
                    try:
                        answer = await http.post(url, json={"instances": rows}, headers={"x-request-id": f"d{seed}"})
                    except httpx.HTTPError:
                        await asyncio.sleep(0.5)
                        continue
                    if answer.status_code != 200:
                        await asyncio.sleep(0.5)
                        continue
                    predictions = answer.json()["predictions"]
                    self.served += len(predictions)
                    now = datetime.now(UTC)
                    labels = [
                        Label(request_id=p["request_id"], label=int(truth), observed_at=now)
                        for p, truth in zip(predictions, frame["churned"], strict=True)
                    ]
                    await bus.publish(LabelsArrived(model=self.model, labels=labels))
                    self.labelled += len(labels)
                    pause = batch / self.timings.rows_per_second - (time.monotonic() - began)
                    if pause > 0:
                        await asyncio.sleep(pause)
        finally:
            await bus.stop()

    async def ledger(self, timeout: float = 30) -> dict[str, Any] | None:
        """The monitor's ledger of the model's labels, once it has received every label sent (or
        after `timeout` seconds, as it stands)."""
        url = f"{self.settings.monitor_url.rstrip('/')}/v1/models/{self.model}/windows"
        found: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5, headers={"authorization": f"Bearer {self.token}"}) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    answer = await http.get(url, params={"limit": 1})
                    answer.raise_for_status()
                    found = answer.json()["ledger"]
                    if found["labels"]["received"] >= self.labelled and not found["labels"]["waiting"]:
                        return found
                await asyncio.sleep(0.5)
        return found

    async def wait_serving(self, version: int, timeout: float = 60) -> None:
        """Until serving answers for the model with `version`."""
        url = f"http://127.0.0.1:{self.settings.serving_port}/v1/models/{self.model}"
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    found = (await http.get(url)).json()
                    if version in [v["version"] for v in found.get("versions", [])]:
                        return
                await asyncio.sleep(0.5)
        raise Stalled(f"serving did not load {self.model} v{version} within {timeout:.0f} s")

    # ------------------------------------------------------------ the run

    async def publish_data(self, bus: Bus, version: str, rows: int, seed: int, shift: float) -> DataArrived:
        """Write a dataset version to the artifact store and announce it."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{version}.csv"
            churn_frame(rows, seed=seed, shift=shift).to_csv(path, index=False)
            stored = await asyncio.to_thread(
                ArtifactStore(self.settings).put_file, f"datasets/{self.model}/{version}.csv", path
            )
        event = DataArrived(
            dataset=self.model, version=version, uri=stored.uri, sha256=stored.sha256, row_count=rows, format="csv"
        )
        await bus.publish(event)
        return event

    async def apply_spec(self) -> None:
        spec = demo_spec(self.model, self.timings)
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(
                f"http://127.0.0.1:{self.settings.registry_port}/v1/specs",
                json={"spec_yaml": spec.model_dump_json(), "reason": "modelbus demo"},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        if answer.status_code != 200:
            raise Stalled(f"applying the demo spec failed: {answer.status_code} {answer.text[:300]}")
        self.say(f"[demo] spec applied: model {self.model}, revision {answer.json()['revision']}")

    async def lifecycle(self, follower: Follower, bus: Bus, version_label: str) -> tuple[int, str]:
        """Follow one lifecycle from training to its rollout's end: (version, final state)."""
        await self.expect(follower, f"{version_label}: training started", lambda e: isinstance(e, TrainingStarted), 120)
        await self.expect(
            follower, f"{version_label}: trained", lambda e: isinstance(e, ModelTrained), self.timings.training
        )
        registered = await self.expect(
            follower, f"{version_label}: registered", lambda e: isinstance(e, ModelRegistered), 120
        )
        version = registered.event.version  # type: ignore[attr-defined]
        evaluated = await self.expect(
            follower,
            f"{version_label}: evaluated",
            lambda e: isinstance(e, ModelEvaluated) and e.version == version,
            300,
        )
        if evaluated.event.decision != "approved":  # type: ignore[attr-defined]
            return version, f"not rolled out ({evaluated.event.decision})"  # type: ignore[attr-defined]
        while True:
            changed = await self.expect(
                follower,
                f"{version_label}: rollout step",
                lambda e: isinstance(e, RolloutChanged) and e.candidate_version == version,
                self.timings.step,
            )
            state = changed.event.to_state  # type: ignore[attr-defined]
            if state in ENDED:
                return version, state

    async def run(self, bus: Bus) -> int:
        tracing = make_tracer_provider(self.settings.model_copy(update={"service_name": "demo"}))
        tracer = tracing.get_tracer("modelbus.demo")
        follower = Follower(credentials.local(self.settings, "admin"))
        await follower.start()
        stop_traffic = asyncio.Event()
        traffic: asyncio.Task[None] | None = None
        try:
            await self.apply_spec()
            self.mark = time.monotonic()
            with tracer.start_as_current_span(f"lifecycle {self.model}") as root:
                first = await self.publish_data(bus, "v1", 5000, seed=7, shift=0.0)
            trace_id = format(root.get_span_context().trace_id, "032x")
            self.say(f"[demo] DataArrived {first.dataset} {first.version} ({first.row_count} rows); trace {trace_id}")
            version, state = await self.lifecycle(follower, bus, "first version")
            if state != "promoted":
                raise Stalled(f"the first version ended {state}")
            await self.wait_serving(version)
            traffic = asyncio.create_task(self.drive(stop_traffic), name="demo-traffic")
            self.say(f"[demo] v{version} serves; labelled traffic at {self.timings.rows_per_second:.0f} rows/s")
            await asyncio.sleep(max(5.0, 2 * self.timings.window_rows / self.timings.rows_per_second))
            self.say(f"[demo] {self.served} answers served and labelled; now the world moves (shift {SHIFT})")
            self.shift = SHIFT
            fresh = await self.publish_data(bus, "v2", 5000, seed=8, shift=SHIFT)
            self.say(f"[demo] the producer's fresh data: DataArrived {fresh.version} (kept until a retrain is asked)")
            drift = await self.expect(
                follower, "drift detected", lambda e: isinstance(e, DriftDetected), self.timings.drift
            )
            drifted = [f.feature for f in drift.event.features if f.drifted]  # type: ignore[attr-defined]
            await self.expect(follower, "alert notified", lambda e: isinstance(e, AlertRaised), 120)
            await self.expect(follower, "retrain requested", lambda e: isinstance(e, RetrainRequested), 120)
            second, outcome = await self.lifecycle(follower, bus, "retrained version")
            retrain_trace = next(
                (
                    e.traceparent.split("-")[1]
                    for e in self.seen
                    if isinstance(e.event, TrainingStarted) and e.event.trigger == "retrain-requested" and e.traceparent
                ),
                None,
            )
            reason = next(
                e.event.reason
                for e in reversed(self.seen)
                if isinstance(e.event, RolloutChanged) and e.event.to_state in ENDED
            )
            stop_traffic.set()
            if traffic is not None:
                await traffic
            ledger = await self.ledger()
            self.summary(version, second, outcome, reason, drifted, trace_id, retrain_trace, ledger)
            return 0
        except Stalled as exc:
            self.say(f"[demo] FAILED: {exc}")
            return 1
        finally:
            stop_traffic.set()
            if traffic is not None:
                with contextlib.suppress(Exception):
                    await traffic
            await follower.stop()
            tracing.shutdown()

    def summary(
        self,
        first: int,
        second: int,
        outcome: str,
        reason: str,
        drifted: list[str],
        trace_id: str,
        retrain_trace: str | None,
        ledger: dict[str, Any] | None,
    ) -> None:
        say = self.say
        say("")
        say(f"[demo] done in {time.monotonic() - self.began:.0f} s: {self.model}")
        say(f"  v{first}: trained on v1 data, promoted; drift in {', '.join(drifted)} once the traffic moved")
        say(f"  v{second}: retrained on the fresh data, {outcome}: {reason}")
        say(f"  traffic: {self.served} answers served, {self.labelled} labels sent")
        if ledger is None:
            say("  labels joined: the monitor's ledger could not be read")
        else:
            labels, answers = ledger["labels"], ledger["answers"]
            rest = ", ".join(f"{n} {k}" for k, n in labels.items() if k not in ("received", "joined") and n)
            say(
                f"  labels joined (the monitor's ledger): {labels['joined']} of {labels['received']} received"
                f"{f' ({rest})' if rest else ''}; {answers['labelled']} of {answers['logged']} answers labelled"
            )
        say("  stages:")
        for stage in self.stages:
            say(f"    {stage.name:<34} {stage.seconds:7.1f} s  {stage.detail[:90]}")
        query = self.settings.trace_query_url.rstrip("/")
        say(f"  trace of the first lifecycle: {trace_id}  ({query}/api/traces/{trace_id})")
        if retrain_trace:
            say(f"  trace of the retrain:         {retrain_trace}  ({query}/api/traces/{retrain_trace})")
        database = self.settings.database_url.split("@")[-1]
        say(f"  artifacts: {self.settings.artifact_url}   database: {database}   logs: {self.settings.stack_dir}/logs")
        say(f"  look around: modelbus models show {self.model}; modelbus lineage {self.model}@{second}")


async def run_demo(settings: Settings, say: Say, timings: Timings | None = None, *, stay: bool = False) -> int:
    """`modelbus demo`: the stack, the platform, one model's whole loop; 0 when it went round.
    With `stay`, the platform (and its console) keeps running afterwards until Ctrl-C."""
    from shared.ops import stack
    from shared.ops.platform import console_access

    began = time.monotonic()
    say("[demo] starting the local stack")
    await asyncio.to_thread(stack.up, settings, say)
    # The demo is an outside producer (data, labels, traffic); only its view of the lifecycle
    # reads the platform's topics, as the admin.
    settings = credentials.local(settings, "producer")
    demo = Demo(settings, say, timings or Timings())
    access, console = console_access(settings)
    tokens = access.get("MODELBUS_API_TOKENS") or settings.api_tokens.get_secret_value()
    alerting = settings.stack_dir / "demo-alerter.yaml"
    alerting.parent.mkdir(parents=True, exist_ok=True)
    alerting.write_text(DEMO_ALERTING)
    platform = Platform(
        settings,
        say,
        console=True,
        extra_env={
            "MODELBUS_API_TOKENS": ",".join(t for t in (tokens, f"{demo.token}=admin:demo") if t),
            "MODELBUS_ALERTER_TICK_SECONDS": "0.5",
            "MODELBUS_ALERTER_CONFIG": str(alerting.resolve()),
        },
    )
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if main is not None:
            loop.add_signal_handler(sig, main.cancel)
    try:
        say("[demo] starting the platform: six services and serving, each its own process")
        platform.start()
        await platform.wait_ready()
        say(f"[demo] platform ready in {time.monotonic() - began:.1f} s; {console}")
        bus = Bus(settings.model_copy(update={"service_name": "demo"}))
        await bus.start()
        try:
            outcome = await demo.run(bus)
        finally:
            await bus.stop()
        say(f"[demo] {console.replace('/ui/ ', f'/ui/models/{demo.model} ', 1)}")
        if stay:
            say("[demo] the platform stays up (Ctrl-C stops it)")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        return outcome
    except PlatformError as exc:
        say(f"[demo] FAILED: {exc}")
        return 1
    except asyncio.CancelledError:
        say("[demo] interrupted")
        return 130
    finally:
        say("[demo] stopping the platform")
        platform.stop()


def timings_from(values: dict[str, Any]) -> Timings:
    """Timings with some values replaced (the CLI's options)."""
    return Timings(**{k: v for k, v in values.items() if v is not None})
