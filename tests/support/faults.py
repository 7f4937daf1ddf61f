"""Fault scenarios against the local stack and a platform of seven processes: kill -9 at random
during concurrent lifecycles while the trainer and monitor groups scale 1 → 3 → 1; the broker and
the database restarted; the S3 server stopped during artifact uploads.

Each scenario returns figures; bench/reliability.py prints them (full profile) and
tests/e2e/test_faults.py asserts them (short profile). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from shared.contract import topics
from shared.contract.envelope import decode
from shared.contract.events import (
    DataArrived,
    Event,
    ModelEvaluated,
    Prediction,
    PredictionsLogged,
    RolloutChanged,
    TrainingFailed,
)
from shared.contract.spec import ModelSpec
from shared.ops.demo import ENDED, FEATURES
from shared.ops.example_data import churn_frame
from shared.ops.platform import ROOT, Platform, processes
from shared.ops.stack import components
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.broker import drop_topics, ensure_topics
from shared.runtime.bus import Bus, publish_events
from shared.runtime.db import make_engine
from shared.runtime.settings import Settings
from shared.runtime.specfile import load_spec

Say = Callable[[str], None]
SERVICES = [p.name for p in processes(Settings())]
GROUPS = {  # service: the module whose build() joins its consumer group
    "registry": "services.registry.app",
    "trainer": "services.trainer.app",
    "evaluator": "services.evaluator.app",
    "deployer": "services.deployer.app",
    "monitor": "services.monitor.app",
    "alerter": "services.alerter.app",
}


@dataclass(frozen=True)
class Profile:
    """How hard a run pushes."""

    lifecycles: int
    kills: int
    kill_every: float  # seconds between kills
    prediction_batches: int


PROFILES = {"short": Profile(5, 8, 3.0, 40), "full": Profile(20, 24, 3.0, 200)}


def light_spec(model: str, *, train_on_data: bool = False) -> ModelSpec:
    """The example spec as a quick model: one candidate without search, a plain accuracy gate, and
    latency budgets that a machine busy with restarts still meets (this is not a speed test)."""
    example = load_spec((ROOT / "schemas/examples/model-spec.yaml").read_text())
    candidate = example.candidates[0].model_copy(update={"search": {}})
    gate = example.gates[0].model_copy(update={"min": 0.6})
    evaluation = example.evaluation.model_copy(
        update={"fairness": None, "max_latency_ms_row": 5000.0, "max_latency_ms_batch": 60000.0}
    )
    retrain_on = ["data", "drift", "performance"] if train_on_data else ["drift", "performance"]
    monitoring = example.monitoring.model_copy(update={"retrain_on": retrain_on})
    return example.model_copy(
        update={
            "model": model,
            "dataset": model,
            "candidates": [candidate],
            "gates": [gate],
            "evaluation": evaluation,
            "monitoring": monitoring,
        }
    )


async def until(check: Callable[[], Awaitable[bool]], timeout: float, every: float = 1.0) -> float | None:
    """Seconds until `check` is true, or None after `timeout`."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        with contextlib.suppress(Exception):
            if await check():
                return time.monotonic() - began
        await asyncio.sleep(every)
    return None


# ---------------------------------------------------------------- the platform under test


@dataclass
class Harness:
    """A platform with its own topics and logs, restartable process by process."""

    base: Settings
    folder: Path
    say: Say = print
    token: str = field(default_factory=lambda: f"faults-{uuid.uuid4().hex}")
    replicas: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = self.folder / "data"
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings = self.base.model_copy(
            update={
                "topic_prefix": f"faults-{uuid.uuid4().hex[:8]}",
                "stack_dir": self.folder,
                "file_roots": [self.root],
            }
        )
        self.env = {
            "MODELBUS_TOPIC_PREFIX": self.settings.topic_prefix,
            "MODELBUS_API_TOKENS": f"{self.token}=admin:faults",
            "MODELBUS_FILE_ROOTS": f'["{self.root}"]',
            "MODELBUS_OTLP_ENDPOINT": "",
            "MODELBUS_TRAINER_LEASE_SECONDS": "5",  # a killed trainer's job is taken over quickly
            "MODELBUS_TRAINER_MAX_ATTEMPTS": "3",
        }
        self.platform = Platform(self.settings, self.say, extra_env=self.env)

    async def start(self) -> None:
        await ensure_topics(self.settings)
        self.platform.start()
        try:
            await self.platform.wait_ready()
        except Exception:
            self.platform.stop()
            raise

    async def stop(self) -> None:
        self.scale_down()
        self.platform.stop()
        await drop_topics(self.settings)

    def scale_up(self, module: str, name: str) -> None:
        """One more replica of a consumer (no health port: several share the machine)."""
        env = {**os.environ, **self.env, "MODELBUS_HEALTH_PORT": "0"}
        log = (self.platform.logs / f"{name}.log").open("ab")
        self.replicas.append(
            subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        )

    def scale_down(self) -> None:
        """Stop the extra replicas cleanly (their partitions go back to the first ones)."""
        for popen in self.replicas:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        for popen in self.replicas:
            try:
                popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                popen.kill()
        self.replicas.clear()

    async def apply(self, spec: ModelSpec) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(
                f"http://127.0.0.1:{self.settings.registry_port}/v1/specs",
                json={"spec_yaml": spec.model_dump_json(), "reason": "fault scenario"},
                headers={"Authorization": f"Bearer {self.token}"},
            )
            answer.raise_for_status()

    async def publish(self, *events: Event) -> None:
        await publish_events(self.settings, *events, source="faults")

    async def events(self, topic: str) -> list[tuple[str, Any]]:
        """(ce_id, event) of every message on a topic (copies with one ce_id included)."""
        from shared.ops.tools import read_all

        found = []
        for record in await read_all(self.settings, topic, timeout=60):
            envelope = decode(record.value, list(record.headers or ()), max_bytes=64 * 1024 * 1024)
            found.append((envelope.id, envelope.event))
        return found


# ---------------------------------------------------------------- chaos


@dataclass
class ChaosReport:
    """What a chaos run did and what it found."""

    lifecycles: int
    completed: int
    outcomes: dict[str, int]
    kills: dict[str, int]
    scaled: str
    seconds: float
    versions: int
    evaluations: int
    rollout_changes: int
    alerts: int
    dead_letters: int
    produced: dict[str, int]  # event type -> distinct events on the bus
    consumed: dict[str, dict[str, int]]  # consumer group -> event type -> handled (inbox)
    missing: dict[str, int]  # "group: type" -> produced but never handled
    duplicates: dict[str, int]  # effect -> how many times it happened twice
    copies: int  # messages delivered twice with one ce_id (absorbed by the inbox)

    @property
    def kill_count(self) -> int:
        return sum(self.kills.values())


def load_batch(model: str, batch: int, rows: int = 50) -> PredictionsLogged:
    """Synthetic served predictions, for the monitor's load."""
    frame = churn_frame(rows, seed=10_000 + batch)
    now = datetime.now(UTC)
    records = [
        Prediction(
            request_id=f"load-{batch}-{i}",
            model_version=1,
            role="stable",
            features={k: (None if v != v else v) for k, v in row.items()},
            prediction=int(i % 2),
            probabilities={"0": 0.4, "1": 0.6},
            latency_ms=0.5,
            served_at=now,
        )
        for i, row in enumerate(frame[FEATURES].astype(object).to_dict("records"))
    ]
    return PredictionsLogged.from_records(model, f"load-{batch}", records)


async def chaos(h: Harness, profile: Profile, seed: int = 7) -> ChaosReport:
    """Concurrent lifecycles while random processes are killed -9 and restarted, and the trainer
    and monitor groups go from 1 to 3 replicas and back; then count everything."""
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:4]
    began = time.monotonic()
    models = await begin_lifecycles(h, profile.lifecycles, f"chaos-{tag}", seed=100)
    h.say(f"[chaos] {len(models)} lifecycles started; killing one process every {profile.kill_every:.0f} s")
    for replica in (2, 3):
        h.scale_up("services.trainer", f"trainer-{replica}")
        h.scale_up("services.monitor", f"monitor-{replica}")
    kills: Counter[str] = Counter()

    # Random order, but every process is hit before any is hit twice.
    victims = [name for _ in range(profile.kills // len(SERVICES) + 1) for name in rng.sample(SERVICES, len(SERVICES))]

    async def killer() -> None:
        for number in range(1, profile.kills + 1):
            await asyncio.sleep(profile.kill_every)
            victim = victims[number - 1]
            h.platform.restart(victim)
            kills[victim] += 1
            if number == profile.kills // 2:
                h.scale_down()
                h.say(f"[chaos] {number} kills so far; trainer and monitor back to one replica each")

    # The monitor's load goes to models without a reference profile: every batch must be handled,
    # but none can drift (a drift would add alerts and retrains the scenario does not expect).
    load_model = f"chaos-{tag}-load"

    async def load() -> None:
        pause = profile.kills * profile.kill_every / max(1, profile.prediction_batches)
        bus = Bus(h.settings.model_copy(update={"service_name": "faults-load"}))
        await bus.start()
        try:
            for batch in range(profile.prediction_batches):
                await bus.publish(load_batch(f"{load_model}-{batch % 3}", batch))
                await asyncio.sleep(pause)
        finally:
            await bus.stop()

    await asyncio.gather(killer(), load())
    h.say(f"[chaos] {sum(kills.values())} kills done ({dict(kills)}); waiting for every lifecycle to end")
    await h.platform.wait_ready()

    async def all_ended() -> bool:
        return set(await lifecycle_ends(h)) >= set(models)

    await until(all_ended, timeout=60 * profile.lifecycles, every=3)
    outcomes = Counter((await lifecycle_ends(h)).values())
    seconds = time.monotonic() - began
    h.say(f"[chaos] {sum(outcomes.values())}/{len(models)} lifecycles ended in {seconds:.0f} s; settling")
    groups = subscriptions(h.settings)
    await until(lambda: _settled(h, models, groups), timeout=120, every=3)
    report = await count(h, models, groups)
    report.lifecycles, report.completed, report.outcomes = len(models), sum(outcomes.values()), dict(outcomes)
    report.kills, report.seconds = dict(kills), seconds
    report.scaled = "trainer and monitor 1 → 3 → 1 replicas"
    return report


def subscriptions(settings: Settings) -> dict[str, dict[str, list[str]]]:
    """Each service's consumer groups and the topics they read (from the services' own wiring)."""
    return {
        service: importlib.import_module(module).build(settings).bus.subscriptions()
        for service, module in GROUPS.items()
    }


async def _settled(h: Harness, models: list[str], groups: dict[str, dict[str, list[str]]]) -> bool:
    return not (await count(h, models, groups)).missing


async def count(h: Harness, models: list[str], groups: dict[str, dict[str, list[str]]]) -> ChaosReport:
    """Everything on the bus for this platform, against what each consumer group handled."""
    on_topic: dict[str, list[tuple[str, Any]]] = {}
    for spec in topics.CATALOG:
        on_topic[spec.name] = await h.events(spec.name)
    produced_ids: dict[str, set[str]] = {}
    for messages in on_topic.values():
        for event_id, event in messages:
            produced_ids.setdefault(type(event).event_type, set()).add(event_id)
    copies = sum(len(messages) - len({i for i, _ in messages}) for messages in on_topic.values())
    engine = make_engine(h.settings)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text("SELECT consumer, event_id, event_type FROM inbox WHERE consumer LIKE :prefix"),
                    {"prefix": f"{h.settings.topic_prefix}.%"},
                )
            ).all()
    finally:
        await engine.dispose()
    handled: dict[str, set[str]] = {}
    consumed: dict[str, dict[str, int]] = {}
    for consumer, event_id, event_type in rows:
        handled.setdefault(consumer, set()).add(event_id)
        consumed.setdefault(consumer, {}).setdefault(event_type, 0)
        consumed[consumer][event_type] += 1
    letters = {i for i, _ in on_topic[topics.DEAD_LETTER]}
    missing: dict[str, int] = {}
    for service, subscriptions in groups.items():
        for group, group_topics in subscriptions.items():
            for topic in group_topics:
                name = topic.removeprefix(f"{h.settings.topic_prefix}.")
                ids = {i for i, _ in on_topic[name]}
                lost = ids - handled.get(group, set())
                if lost:
                    missing[f"{service}: {name}"] = len(lost)
    mine = set(models)

    def of(name: str, key: Callable[[Any], Any]) -> tuple[int, int]:
        """(distinct events of the scenario's models, effects that happened twice)."""
        seen: Counter[Any] = Counter()
        ids = set()
        for event_id, event in on_topic[name]:
            if getattr(event, "model", None) in mine and event_id not in ids:
                ids.add(event_id)
                seen[key(event)] += 1
        return len(ids), sum(n - 1 for n in seen.values() if n > 1)

    versions, twice_registered = of(topics.MODEL_REGISTERED, lambda e: (e.model, e.run_id))
    evaluations, twice_evaluated = of(topics.MODEL_EVALUATED, lambda e: (e.model, e.version))
    changes, twice_changed = of(
        topics.ROLLOUT_CHANGED, lambda e: (e.model, e.rollout_id, e.from_state, e.to_state, e.step)
    )
    trained, twice_trained = of(topics.MODEL_TRAINED, lambda e: (e.model, e.dataset_version))
    alerts = sum(1 for _, e in on_topic[topics.ALERTS] if getattr(e, "labels", {}).get("model") in mine)
    return ChaosReport(
        lifecycles=0,
        completed=0,
        outcomes={},
        kills={},
        scaled="",
        seconds=0.0,
        versions=versions,
        evaluations=evaluations,
        rollout_changes=changes,
        alerts=alerts,
        dead_letters=len(letters),
        produced={t: len(ids) for t, ids in sorted(produced_ids.items())},
        consumed=consumed,
        missing=missing,
        duplicates={
            "version registered twice for one run": twice_registered,
            "version evaluated twice": twice_evaluated,
            "rollout transition made twice": twice_changed,
            "dataset version trained twice": twice_trained + max(0, trained - len(mine)),
        },
        copies=copies,
    )


# ---------------------------------------------------------------- the stack's components


@dataclass
class Recovery:
    """One outage of a stack component and how the platform came back."""

    component: str
    outage_seconds: float  # stopped until started again
    recovered_seconds: float | None  # from its return until a new dataset went through
    processes_alive: bool
    detail: str = ""


async def probe(h: Harness, timeout: float) -> float | None:
    """Seconds until a new dataset version is recorded by the registry (None: not in time)."""
    name = f"probe-{uuid.uuid4().hex[:6]}"
    frame = churn_frame(300, seed=3)
    path = h.root / f"{name}.csv"
    path.write_text(frame.to_csv(index=False))
    began = time.monotonic()
    url = f"http://127.0.0.1:{h.settings.registry_port}/v1/datasets/{name}/v1"
    headers = {"Authorization": f"Bearer {h.token}"}
    sent = False

    async def recorded() -> bool:
        nonlocal sent
        if not sent:
            await h.publish(DataArrived(dataset=name, version="v1", uri=f"file://{path}", format="csv"))
            sent = True
        async with httpx.AsyncClient(timeout=5) as http:
            return (await http.get(url, headers=headers)).status_code == 200

    waited = await until(recorded, timeout=timeout)
    return None if waited is None else time.monotonic() - began


async def restart(h: Harness, component: str, outage: float = 5.0) -> Recovery:
    """Stop a stack component (kafka or postgres), leave it down for `outage` seconds, start it
    again, and time until the platform handles new data."""
    part = next(c for c in components(h.base, h.say) if c.name == component)  # the stack's own pid files
    began = time.monotonic()
    await asyncio.to_thread(part.stop)
    await asyncio.sleep(outage)
    await asyncio.to_thread(part.start)
    back = time.monotonic()
    recovered = await probe(h, timeout=180)
    dead = h.platform.dead()
    h.say(f"[faults] {component} down {back - began:.1f} s; platform recovered in {recovered or -1:.1f} s")
    return Recovery(component, back - began, recovered, not dead, f"exited: {dead}" if dead else "")


@dataclass
class UploadFailure:
    """A training whose artifact upload fails while the S3 server is away."""

    failed: TrainingFailed | None
    recovered_seconds: float | None


async def s3_outage(h: Harness) -> UploadFailure:
    """Stop the S3 server, send data from file:// (readable) so only the upload fails: the
    training must end in TrainingFailed after its retries; with S3 back, training works again."""
    model = f"upload-{uuid.uuid4().hex[:4]}"
    await h.apply(light_spec(model, train_on_data=True))
    path = h.root / f"{model}-v1.csv"
    path.write_text(churn_frame(3000, seed=5).to_csv(index=False))
    s3 = next(c for c in components(h.base, h.say) if c.name == "s3")
    await asyncio.to_thread(s3.stop)
    try:
        await h.publish(DataArrived(dataset=model, version="v1", uri=f"file://{path}", format="csv"))

        async def failed() -> bool:
            return any(
                isinstance(e, TrainingFailed) and e.dataset == model for _, e in await h.events(topics.TRAINING_FAILED)
            )

        await until(failed, timeout=240, every=2)
    finally:
        await asyncio.to_thread(s3.start)
    failure = next(
        (e for _, e in await h.events(topics.TRAINING_FAILED) if isinstance(e, TrainingFailed) and e.dataset == model),
        None,
    )
    began = time.monotonic()
    path2 = h.root / f"{model}-v2.csv"
    path2.write_text(churn_frame(3000, seed=6).to_csv(index=False))
    await h.publish(DataArrived(dataset=model, version="v2", uri=f"file://{path2}", format="csv"))

    async def trained() -> bool:
        return any(getattr(e, "model", None) == model for _, e in await h.events(topics.MODEL_TRAINED))

    waited = await until(trained, timeout=180, every=2)
    return UploadFailure(failure, None if waited is None else time.monotonic() - began)


# ---------------------------------------------------------------- lifecycles, started and counted


async def begin_lifecycles(h: Harness, count_: int, prefix: str, seed: int = 300) -> list[str]:
    """Apply `count_` light specs and send each its first dataset; the models' names."""
    tag = uuid.uuid4().hex[:4]
    models = [f"{prefix}-{tag}-{i}" for i in range(count_)]
    for model in models:
        await h.apply(light_spec(model))
    store = ArtifactStore(h.settings)
    arrivals = []
    for index, model in enumerate(models):
        data = churn_frame(3000, seed=seed + index).to_csv(index=False).encode()
        stored = await asyncio.to_thread(store.put_bytes, f"datasets/{model}/v1.csv", data)
        arrivals.append(DataArrived(dataset=model, version="v1", uri=stored.uri, sha256=stored.sha256, format="csv"))
    await h.publish(*arrivals)
    return models


async def lifecycle_ends(h: Harness) -> dict[str, str]:
    """How each model's lifecycle ended so far: its rollout's end, or the evaluation that stopped it."""
    ended: dict[str, str] = {}
    for _, event in await h.events(topics.MODEL_EVALUATED):
        if isinstance(event, ModelEvaluated) and event.decision != "approved":
            ended[event.model] = event.decision
    for _, event in await h.events(topics.ROLLOUT_CHANGED):
        if isinstance(event, RolloutChanged) and event.to_state in ENDED:
            ended[event.model] = event.to_state
    return ended


async def end_lifecycles(h: Harness, models: list[str], timeout: float) -> tuple[dict[str, int], ChaosReport]:
    """Wait until every model's lifecycle ended and every consumer group handled everything; the
    outcomes and the count of the whole bus."""

    async def all_ended() -> bool:
        return set(await lifecycle_ends(h)) >= set(models)

    await until(all_ended, timeout=timeout, every=3)
    ends = await lifecycle_ends(h)
    outcomes = Counter(ends[m] for m in models if m in ends)
    groups = subscriptions(h.settings)
    await until(lambda: _settled(h, models, groups), timeout=180, every=3)
    return dict(outcomes), await count(h, models, groups)
