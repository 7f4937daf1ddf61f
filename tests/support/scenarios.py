"""The loop's decisions on a simulated world with a hidden truth (tests/support/world.py), against
the local stack and a platform of seven processes, driven only through Kafka and HTTP:

  1. covariate drift, and the producer publishes fresh data: one retrain, the new version promoted;
  2. covariate drift and no fresh data, over several cooldowns: no new version, one open alert;
  3. concept drift with labels and no producer: production feedback becomes a dataset version,
     the retrained candidate wins on paired live labels and is promoted;
  4. a broken candidate (constant predictions) rolled back without labels;
  5. CBPE: the estimated accuracy per window against the realised one, steady and drifted.

Each scenario returns a Report of figures; tests/e2e/test_scenarios.py asserts them (short
profile), bench/scenarios.py prints them (full profile). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from sqlalchemy import text

from shared.contract.envelope import Envelope
from shared.contract.events import (
    AlertRaised,
    CanaryAnalyzed,
    DataArrived,
    Event,
    Label,
    LabelsArrived,
    ModelEvaluated,
    ModelRegistered,
    ModelTrained,
    RetrainRequested,
    RetrainSkipped,
    RolloutChanged,
    TrainingFailed,
    TrainingStarted,
)
from shared.contract.spec import ModelSpec
from shared.ops.platform import Follower, Platform, describe
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.broker import drop_topics, ensure_topics
from shared.runtime.bus import Bus
from shared.runtime.db import make_engine
from shared.runtime.settings import Settings
from tests.support.burner import burning
from tests.support.world import FEATURES, KEY, TARGET, Pace, World, boosting_spec, interactions, noise, world_spec

Say = Callable[[str], None]
ENDED = ("promoted", "rolled-back")
BASE = World()
MOVED = BASE.moved(x1=1.2, x2=-1.2)  # covariate drift: two of four features, the same truth
CHANGED = BASE.changed((-1.8, -1.4, 0.9, 1.5))  # concept drift: the same features, a new truth


@dataclass(frozen=True)
class Profile:
    """How long the scenarios run."""

    cooldowns: int  # scenario 2: cooldown periods with drift and no data
    cooldown_seconds: float
    cbpe_windows: int  # scenario 5: windows per phase (steady, drifted)
    cbpe_window_rows: int


PROFILES = {"short": Profile(5, 8.0, 20, 500), "full": Profile(10, 10.0, 30, 1000)}


@dataclass(frozen=True)
class Served:
    """One answered request, with the truth the world drew for it."""

    request_id: str
    version: int
    probability: float  # of class 1
    prediction: int
    truth: int


@dataclass
class Report:
    """What one scenario did, in figures."""

    scenario: str
    model: str
    versions: dict[int, str] = field(default_factory=dict)  # version: where its rollout ended
    retrains_asked: int = 0
    retrains_skipped: int = 0
    retrains_run: int = 0
    rollbacks: int = 0
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    skipped_reasons: list[str] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)  # DataArrived of producer monitor
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


# ---------------------------------------------------------------- the platform under test


@dataclass
class Loop:
    """A platform of its own (topics, logs, token), with the scenario's means: apply a spec,
    publish data, send traffic and labels, follow the events, read alerts and windows."""

    base: Settings
    folder: Path
    say: Say = print
    token: str = field(default_factory=lambda: f"scenario-{uuid.uuid4().hex}")
    seen: list[Envelope] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. more tokens, limits

    def __post_init__(self) -> None:
        self.settings = self.base.model_copy(
            update={"topic_prefix": f"scen-{uuid.uuid4().hex[:8]}", "stack_dir": self.folder}
        )
        env = {
            "MODELBUS_TOPIC_PREFIX": self.settings.topic_prefix,
            "MODELBUS_API_TOKENS": f"{self.token}=admin:scenarios",
            "MODELBUS_OTLP_ENDPOINT": "",
            "MODELBUS_LOG_LEVEL": "INFO",
        }
        extra = dict(self.extra_env)
        if "MODELBUS_API_TOKENS" in extra:
            extra["MODELBUS_API_TOKENS"] = f"{env['MODELBUS_API_TOKENS']},{extra['MODELBUS_API_TOKENS']}"
        env |= extra
        self.platform = Platform(self.settings, self.say, extra_env=env)
        self.follower = Follower(self.settings)
        self.bus = Bus(self.settings.model_copy(update={"service_name": "scenarios"}))
        self.engine = make_engine(self.settings)

    async def start(self) -> None:
        await ensure_topics(self.settings)
        self.platform.start()
        await self.platform.wait_ready()
        await self.follower.start()
        await self.bus.start()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.bus.stop()
            await self.follower.stop()
        self.platform.stop()
        await self.engine.dispose()
        await drop_topics(self.settings)

    # ------------------------------------------------------------ acting

    async def apply(self, model: str, pace: Pace) -> None:
        await self.apply_spec(world_spec(model, pace))

    async def apply_spec(self, spec: ModelSpec) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(
                f"http://127.0.0.1:{self.settings.registry_port}/v1/specs",
                json={"spec_yaml": spec.model_dump_json(), "reason": "scenario"},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        answer.raise_for_status()

    async def publish(self, model: str, version: str, frame: pd.DataFrame) -> None:
        """A producer's dataset version: CSV in the artifact store, then DataArrived."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{version}.csv"
            frame.to_csv(path, index=False)
            stored = await asyncio.to_thread(
                ArtifactStore(self.settings).put_file, f"datasets/{model}/{version}.csv", path
            )
        await self.bus.publish(
            DataArrived(
                dataset=model,
                version=version,
                uri=stored.uri,
                sha256=stored.sha256,
                row_count=len(frame),
                format="csv",
                producer="scenario",
            )
        )

    async def predict(
        self, http: httpx.AsyncClient, model: str, frame: pd.DataFrame, request_id: str | None = None
    ) -> list[Served]:
        """One request for the frame's rows; the answer of row i is request `<request id>-<i>`."""
        rows = frame[[KEY, *FEATURES]].to_dict("records")
        answer = await http.post(
            f"http://127.0.0.1:{self.settings.serving_port}/v1/models/{model}:predict",
            json={"instances": rows},
            headers={"x-request-id": request_id or f"r-{uuid.uuid4().hex[:12]}"},
        )
        answer.raise_for_status()
        return [
            Served(p["request_id"], p["version"], float(p["probabilities"]["1"]), int(p["prediction"]), int(truth))
            for p, truth in zip(answer.json()["predictions"], frame[TARGET], strict=True)
        ]

    async def serve(self, model: str, world: World, rows: int, *, seed: int, batch: int = 250) -> list[Served]:
        """`rows` rows of the world, as fast as serving answers, unlabelled (labels come later)."""
        served: list[Served] = []
        async with httpx.AsyncClient(timeout=30) as http:
            for start in range(0, rows, batch):
                frame = world.frame(min(batch, rows - start), seed=seed * 100_000 + start)
                served += await self.predict(http, model, frame)
        return served

    async def label(self, model: str, served: list[Served]) -> None:
        """The truth of answered requests, as LabelsArrived (in batches of 1,000)."""
        now = datetime.now(UTC)
        for start in range(0, len(served), 1000):
            part = served[start : start + 1000]
            labels = [Label(request_id=s.request_id, label=s.truth, observed_at=now) for s in part]
            await self.bus.publish(LabelsArrived(model=model, labels=labels))

    @contextlib.asynccontextmanager
    async def traffic(
        self, model: str, world: World, *, labels: bool, rate: float = 60.0, delay: float = 3.0
    ) -> AsyncIterator[list[Served]]:
        """Steady traffic in the background (`rate` rows a second, batches of 20), each batch's
        labels `delay` seconds after its answers when `labels`; yields what was served so far."""
        served: list[Served] = []
        stop = asyncio.Event()

        async def drive() -> None:
            pending: list[tuple[float, list[Served]]] = []
            seed = int(uuid.uuid4().int % 1_000_000)
            async with httpx.AsyncClient(timeout=30) as http:
                while not stop.is_set():
                    began = time.monotonic()
                    seed += 1
                    with contextlib.suppress(httpx.HTTPError):
                        answered = await self.predict(http, model, world.frame(20, seed=seed))
                        served.extend(answered)
                        if labels:
                            pending.append((time.monotonic() + delay, answered))
                    while pending and pending[0][0] <= time.monotonic():
                        await self.label(model, pending.pop(0)[1])
                    await asyncio.sleep(max(0.0, 20 / rate - (time.monotonic() - began)))

        task = asyncio.create_task(drive())
        try:
            yield served
        finally:
            stop.set()
            await task

    # ------------------------------------------------------------ following

    async def pump(self) -> None:
        for envelope in await self.follower.envelopes(timeout=0.3):
            self.seen.append(envelope)
            line = describe(envelope.event)
            if line and not line.startswith(("DRIFT", "ALERT", "resolved")):
                self.say(f"  {line}")

    def events(self, model: str, kind: type[Event] | tuple[type[Event], ...] = Event) -> list[Any]:
        """Every event seen about `model` (a dataset's events: those of the dataset of its name)."""
        found = []
        for envelope in self.seen:
            event = envelope.event
            about = getattr(event, "model", None) or getattr(event, "dataset", None)
            if isinstance(event, AlertRaised):
                about = event.labels.get("model")
            if about == model and isinstance(event, kind):
                found.append(event)
        return found

    async def wait(self, model: str, wanted: Callable[[Event], bool], timeout: float, what: str) -> Any:
        """The first event about `model`, seen or to come, that is `wanted`; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events(model):
                if isinstance(event, TrainingFailed):
                    raise AssertionError(f"{model}: training failed at {event.stage}: {event.reason}")
                if wanted(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"{model}: {what} not within {timeout:.0f} s; logs in {self.platform.logs}")
            await self.pump()

    async def until(self, check: Callable[[], Any], timeout: float, what: str) -> None:
        """Until `await check()` is true, following events meanwhile."""
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not within {timeout:.0f} s; logs in {self.platform.logs}")
            await self.pump()

    async def rollout_end(self, model: str, version: int, timeout: float = 300) -> RolloutChanged:
        ended: RolloutChanged = await self.wait(
            model,
            lambda e: isinstance(e, RolloutChanged) and e.candidate_version == version and e.to_state in ENDED,
            timeout,
            f"the end of v{version}'s rollout",
        )
        return ended

    async def first_version(self, model: str, pace: Pace, frame: pd.DataFrame) -> None:
        """Apply the spec, publish the first dataset version, wait for v1 to serve."""
        await self.apply(model, pace)
        await self.publish(model, "d1", frame)
        await self.rollout_end(model, 1, timeout=240)
        await self.serving(model, 1)

    async def serving(self, model: str, version: int, timeout: float = 60) -> None:
        """Until serving answers for `model` with `version` loaded."""

        async def loaded() -> bool:
            async with httpx.AsyncClient(timeout=5) as http:
                found = await http.get(f"http://127.0.0.1:{self.settings.serving_port}/v1/models/{model}")
            return found.status_code == 200 and version in [v["version"] for v in found.json().get("versions", [])]

        await self.until(loaded, timeout, f"serving {model} v{version}")

    # ------------------------------------------------------------ reading

    async def alerts(self, model: str, kind: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(
                f"http://127.0.0.1:{self.settings.alerter_port}/v1/alerts",
                params={"model": model, "kind": kind},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        answer.raise_for_status()
        found: list[dict[str, Any]] = answer.json()
        return found

    async def ledger(self, model: str) -> dict[str, Any]:
        """The monitor's ledger of the model's labels and answers, from its API."""
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(
                f"{self.settings.monitor_url.rstrip('/')}/v1/models/{model}/windows",
                params={"limit": 1},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()["ledger"]
        return found

    async def windows(self, model: str) -> list[dict[str, Any]]:
        """The monitor's closed windows of `model`, oldest first (as monitor_windows keeps them)."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT version, started_at, ended_at, rows, dataset_drift, result FROM monitor_windows"
                    " WHERE model = :model ORDER BY started_at"
                ),
                {"model": model},
            )
            return [dict(row._mapping) for row in rows]

    def report(self, scenario: str, model: str, began: float) -> Report:
        report = Report(scenario, model, seconds=round(time.monotonic() - began, 1))
        for event in self.events(model, ModelRegistered):
            report.versions.setdefault(event.version, "registered")
        for event in self.events(model, RolloutChanged):
            if event.to_state in ENDED:
                report.versions[event.candidate_version] = event.to_state
        report.rollbacks = sum(state == "rolled-back" for state in report.versions.values())
        report.retrains_asked = len(self.events(model, RetrainRequested))
        skipped = self.events(model, RetrainSkipped)
        report.retrains_skipped = len(skipped)
        report.skipped_reasons = sorted({s.reason for s in skipped})
        starts = self.events(model, TrainingStarted)
        report.retrains_run = sum(s.trigger in ("retrain-requested", "feedback") for s in starts)
        report.verdicts = [
            {
                "version": c.candidate_version,
                "verdict": c.verdict,
                "reason": c.reason,
                "evidence": [
                    {k: v for k, v in m.model_dump(mode="json").items() if v is not None} for m in c.comparisons
                ],
            }
            for c in self.events(model, CanaryAnalyzed)
        ]
        report.feedback = [
            {"version": d.version, "rows": d.row_count, "lineage": d.lineage.model_dump(mode="json")}
            for d in self.events(model, DataArrived)
            if d.producer == "monitor" and d.lineage is not None
        ]
        return report


def name(scenario: str) -> str:
    return f"{scenario}-{uuid.uuid4().hex[:6]}"


# ---------------------------------------------------------------- the scenarios


async def fresh_data(loop: Loop, profile: Profile) -> Report:
    """Covariate drift, and the producer publishes data from the moved world."""
    began, model = time.monotonic(), name("fresh")
    await loop.first_version(model, Pace(), BASE.frame(3000, seed=1))
    await loop.publish(model, "d2", MOVED.frame(3000, seed=2))
    async with loop.traffic(model, MOVED, labels=True):
        await loop.rollout_end(model, 2)
    return loop.report("1. covariate drift, fresh data", model, began)


async def no_fresh_data(loop: Loop, profile: Profile) -> Report:
    """Covariate drift, no new data, for `profile.cooldowns` cooldown periods."""
    began, model = time.monotonic(), name("stale")
    pace = Pace(window_rows=200, window_seconds=5, cooldown_seconds=profile.cooldown_seconds)
    await loop.first_version(model, pace, BASE.frame(3000, seed=3))
    async with loop.traffic(model, MOVED, labels=False):
        drifting = time.monotonic()

        async def cooldowns_passed() -> bool:
            skipped = len(loop.events(model, RetrainSkipped))
            return skipped >= profile.cooldowns and time.monotonic() - drifting >= (
                profile.cooldowns * profile.cooldown_seconds
            )

        await loop.until(cooldowns_passed, 60 + 4 * profile.cooldowns * profile.cooldown_seconds, "the cooldowns")

        async def alerted() -> bool:
            return any(a["status"] == "firing" for a in await loop.alerts(model, "retrain-skipped"))

        await loop.until(alerted, 60, "the retrain-skipped alert")
    report = loop.report("2. covariate drift, no fresh data", model, began)
    report.alerts = await loop.alerts(model, "retrain-skipped")
    report.figures = {
        "drifting_seconds": round(time.monotonic() - drifting, 1),
        "cooldown_seconds": profile.cooldown_seconds,
        "alert_notifications": len(
            [a for a in loop.events(model, AlertRaised) if a.labels.get("kind") == "retrain-skipped"]
        ),
    }
    return report


async def feedback(loop: Loop, profile: Profile) -> Report:
    """Concept drift with labels flowing and no producer: feedback becomes the training data."""
    began, model = time.monotonic(), name("concept")
    pace = Pace(
        extra={
            "feedback": {"min_rows": 400, "since": "last-version"},
            "performance": {"metric": "accuracy", "max_drop": 0.05, "min_labels": 400},
        }
    )
    await loop.first_version(model, pace, BASE.frame(3000, seed=4))
    async with loop.traffic(model, CHANGED, labels=True) as served:
        await loop.rollout_end(model, 2)
    report = loop.report("3. concept drift, labels, feedback", model, began)
    on = [s for s in served if s.version in (1, 2)]
    report.figures = {
        f"live_accuracy_v{v}": round(float(np.mean([s.prediction == s.truth for s in on if s.version == v])), 4)
        for v in (1, 2)
        if any(s.version == v for s in on)
    }
    return report


async def broken(loop: Loop, profile: Profile) -> Report:
    """A candidate that predicts one class for everything, rolled back with no labels at all."""
    began, model = time.monotonic(), name("broken")
    pace = Pace(retrain_on=("data", "drift", "performance"))
    await loop.first_version(model, pace, BASE.frame(3000, seed=5))
    async with loop.traffic(model, BASE, labels=False, rate=100):

        async def stable_window() -> bool:
            return len(await loop.windows(model)) >= 1

        await loop.until(stable_window, 120, "a closed window of v1")
        await loop.publish(model, "d2", noise(3000, seed=6))
        ended = await loop.rollout_end(model, 2)
    report = loop.report("4. broken candidate, no labels", model, began)
    report.figures = {"rollback_reason": ended.reason}
    return report


async def busy_machine(loop: Loop, seconds: float = 300) -> tuple[Report, list[ModelTrained], list[ModelEvaluated]]:
    """A spec offering a linear model and gradient boosting on data the linear one cannot fit,
    trained, judged and rolled out while a CPU burner keeps every core busy: the better model must
    still be chosen, pass its latency gates and be promoted. The report's figures say how many
    cores the burner kept busy on average."""
    began, model = time.monotonic(), name("busy")
    with burning(seconds) as burner:
        await loop.apply_spec(boosting_spec(model))
        await loop.publish(model, "d1", interactions(4000, seed=12))
        await loop.rollout_end(model, 1, timeout=seconds)
    report = loop.report("a busy machine", model, began)
    report.figures = {"cores_busy": round(burner.cores_busy, 2), "seconds": round(burner.seconds, 1)}
    return report, loop.events(model, ModelTrained), loop.events(model, ModelEvaluated)


async def labels_in_any_order(loop: Loop, rows: int = 500) -> tuple[Report, dict[str, Any]]:
    """Labels as fast clients send them: `rows` labelled the moment their answers come back, `rows`
    labelled before serving even answers them (the monitor holds them: the request ids are the
    client's), and 50 labels for requests nobody served. Returns the report and the monitor's
    ledger once the unknown labels have waited their time."""
    began, model = time.monotonic(), name("labels")
    await loop.first_version(model, Pace(), BASE.frame(3000, seed=9))
    now = datetime.now(UTC)
    async with httpx.AsyncClient(timeout=30) as http:
        for start in range(0, rows, 100):
            await loop.label(model, await loop.predict(http, model, BASE.frame(100, seed=90_000 + start)))
        early = [
            (f"early-{uuid.uuid4().hex[:8]}", BASE.frame(100, seed=91_000 + start)) for start in range(0, rows, 100)
        ]
        for request_id, frame in early:
            truths = [int(t) for t in frame[TARGET]]
            labels = [Label(request_id=f"{request_id}-{i}", label=t, observed_at=now) for i, t in enumerate(truths)]
            await loop.bus.publish(LabelsArrived(model=model, labels=labels))
        nobody = [Label(request_id=f"nobody-{uuid.uuid4().hex}", label=1, observed_at=now) for _ in range(50)]
        await loop.bus.publish(LabelsArrived(model=model, labels=nobody))

        async def parked() -> bool:
            labels = (await loop.ledger(model))["labels"]
            return bool(labels["received"] == 2 * rows + 50 and labels["waiting"] >= rows + 50)

        await loop.until(parked, 60, "the early labels parked")
        for request_id, frame in early:
            await loop.predict(http, model, frame, request_id=request_id)

    async def settled() -> bool:
        labels = (await loop.ledger(model))["labels"]
        return bool(labels["joined"] == 2 * rows and labels["waiting"] == 0)

    await loop.until(settled, 120, "every label joined or expired")
    return loop.report("labels in any order", model, began), await loop.ledger(model)


async def estimation(loop: Loop, profile: Profile, *, reference_rows: int = 0) -> tuple[Report, dict[str, Any]]:
    """CBPE on the simulation: per window, the estimated accuracy against the realised one, over
    `profile.cbpe_windows` windows of the unchanged world and as many of the moved world. With
    `reference_rows`, that many rows are served first (windows not counted) as a reference for
    other estimators; returns the report and the served rows per phase."""
    began, model = time.monotonic(), name("cbpe")
    size = profile.cbpe_window_rows
    pace = Pace(window_rows=size, window_seconds=3600, retrain_on=())
    await loop.first_version(model, pace, BASE.frame(5000, seed=7))
    phases: dict[str, list[Served]] = {}
    if reference_rows:
        phases["reference"] = await loop.serve(model, BASE, reference_rows, seed=8)
    moved = BASE.moved(x1=1.0, x2=1.0)
    expected = len(phases.get("reference", [])) // size
    for index, (phase, world) in enumerate((("steady", BASE), ("drifted", moved))):
        phases[phase] = await loop.serve(model, world, profile.cbpe_windows * size, seed=10 + index)
        expected += profile.cbpe_windows

        async def closed(expected: int = expected) -> bool:
            return len(await loop.windows(model)) >= expected

        await loop.until(closed, 180, f"{expected} closed windows")
        await loop.label(model, phases[phase])

    async def realised() -> bool:
        found = await loop.windows(model)
        complete = sum(1 for w in found if (w["result"].get("realised") or {}).get("rows") == w["rows"])
        return complete >= 2 * profile.cbpe_windows  # the reference's windows get no labels

    await loop.until(realised, 180, "the realised accuracy of every window")
    found = (await loop.windows(model))[len(phases.get("reference", [])) // size :]
    table: dict[str, Any] = {}
    for index, phase in enumerate(("steady", "drifted")):
        part = found[index * profile.cbpe_windows : (index + 1) * profile.cbpe_windows]
        errors = [abs(w["result"]["estimated"]["accuracy"] - w["result"]["realised"]["accuracy"]) for w in part]
        table[phase] = {
            "windows": len(part),
            "rows_per_window": size,
            "mae": round(float(np.mean(errors)), 4),
            "max_error": round(float(np.max(errors)), 4),
            "mean_estimated": round(float(np.mean([w["result"]["estimated"]["accuracy"] for w in part])), 4),
            "mean_realised": round(float(np.mean([w["result"]["realised"]["accuracy"] for w in part])), 4),
            "dataset_drift_windows": sum(bool(w["dataset_drift"]) for w in part),
        }
    report = loop.report("5. CBPE, steady and drifted", model, began)
    report.figures = table
    return report, {k: [s.__dict__ for s in v] for k, v in phases.items()}
