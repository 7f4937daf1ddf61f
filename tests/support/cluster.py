"""The platform on a three-broker Kafka cluster (KRaft, topics replicated three times,
min.insync.replicas=2), on ports of its own beside the local stack's broker: the leader of the
busiest partitions killed -9 again and again during concurrent lifecycles and prediction load,
then two brokers of three stopped at once.

bench/faults.py prints the figures (full profile); tests/e2e/test_cluster_faults.py asserts them
(short profile). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.contract import topics
from shared.contract.events import DataArrived, RolloutChanged
from shared.ops.demo import ENDED
from shared.ops.example_data import churn_frame
from shared.ops.kafka import Kafka, KafkaCluster, cluster_bootstrap
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.broker import aiokafka_options, ensure_topics
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings
from tests.support.faults import Harness, begin_lifecycles, end_lifecycles, light_spec, load_batch, until

Say = Callable[[str], None]
BASE_PORT = 19092  # beside the local stack's 9092: 19092/19093, 19094/19095, 19096/19097
BUSIEST = (topics.PREDICTIONS_LOGGED, topics.MODEL_TRAINED, topics.ROLLOUT_CHANGED)
PROBE_TOPIC = "cluster-probe"


@dataclass(frozen=True)
class Profile:
    """How hard a run pushes."""

    lifecycles: int
    kills: int
    prediction_batches: int


PROFILES = {"short": Profile(4, 3, 60), "full": Profile(20, 10, 400)}


@contextlib.asynccontextmanager
async def three_brokers(folder: Path, say: Say = print) -> AsyncIterator[KafkaCluster]:
    """A three-node cluster of the local stack's Kafka, in `folder`, stopped afterwards."""
    settings = Settings(stack_dir=folder, kafka_bootstrap=cluster_bootstrap(3, port=BASE_PORT))
    cluster = KafkaCluster("kafka", settings, say)
    await asyncio.to_thread(cluster.start)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


def on_cluster(base: Settings, cluster: KafkaCluster) -> Settings:
    """The local stack's settings, with the cluster as the bus."""
    return base.model_copy(update={"kafka_bootstrap": cluster.settings.kafka_bootstrap, "topic_replication_factor": 3})


def cluster_harness(base: Settings, cluster: KafkaCluster, folder: Path, say: Say = print) -> Harness:
    """A platform of seven processes whose bus is the cluster."""
    h = Harness(on_cluster(base, cluster), folder, say=say)
    h.env |= {
        "MODELBUS_KAFKA_BOOTSTRAP": cluster.settings.kafka_bootstrap,
        "MODELBUS_TOPIC_REPLICATION_FACTOR": "3",
    }
    return h


# ---------------------------------------------------------------- the brokers


async def _described(settings: Settings, names: list[str]) -> list[dict[str, Any]]:
    """The topics' partitions, asked again (a few times) while a broker that just came back is
    not ready for the admin client yet."""
    for attempt in range(5):
        admin = AIOKafkaAdminClient(**aiokafka_options(settings))
        try:
            await admin.start()
            return list(await admin.describe_topics(names))
        except KafkaError:
            if attempt == 4:
                raise
            await asyncio.sleep(1)
        finally:
            await admin.close()
    raise AssertionError("unreachable")


async def leaders(settings: Settings, names: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the node id leading it."""
    return {
        (described["topic"], partition["partition"]): partition["leader"]
        for described in await _described(settings, names)
        for partition in described["partitions"]
    }


async def fully_replicated(settings: Settings, names: list[str]) -> bool:
    """Whether every partition of these topics has all three replicas in sync."""
    described = await _described(settings, names)
    return all(len(p["isr"]) == 3 and p["leader"] >= 0 for d in described for p in d["partitions"])


def kill_node(node: Kafka) -> None:
    """kill -9 the node's JVM (the whole process group: what a machine loss does to it)."""
    pid = node.pid()
    if pid is not None:
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while node.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
    node.pid_file.unlink(missing_ok=True)


def start_node(cluster: KafkaCluster, node: Kafka) -> None:
    node.spawn_node(next(filter(None, (n.cluster_id() for n in cluster.nodes))))


# ---------------------------------------------------------------- production, probed


@dataclass
class Probe:
    """Sends a small message every 100 ms to each partition of the probe topic (acks=all,
    idempotent) and keeps when each was acknowledged."""

    settings: Settings
    acked: dict[int, list[float]] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    sent: list[bytes] = field(default_factory=list)
    stopping: bool = False

    async def run(self) -> None:
        producer = AIOKafkaProducer(
            **aiokafka_options(self.settings), enable_idempotence=True, acks="all", request_timeout_ms=5000
        )
        await producer.start()
        try:
            number = 0
            while not self.stopping:
                sends = []
                for partition in range(3):
                    number += 1
                    value = f"probe-{number}".encode()
                    sends.append(self._one(producer, partition, value))
                await asyncio.gather(*sends)
                await asyncio.sleep(0.1)
        finally:
            await producer.stop()

    async def _one(self, producer: AIOKafkaProducer, partition: int, value: bytes) -> None:
        try:
            await asyncio.wait_for(
                producer.send_and_wait(self.settings.topic(PROBE_TOPIC), value, partition=partition), timeout=20
            )
        except (KafkaError, TimeoutError) as exc:
            self.refused[type(exc).__name__] += 1
            return
        self.acked.setdefault(partition, []).append(time.monotonic())
        self.sent.append(value)

    def resumed_after(self, moment: float, partitions: list[int]) -> float | None:
        """Seconds from `moment` until every one of these partitions took a write again."""
        firsts = []
        for partition in partitions:
            later = [t for t in self.acked.get(partition, []) if t > moment]
            if not later:
                return None
            firsts.append(min(later))
        return max(firsts) - moment if firsts else 0.0


# ---------------------------------------------------------------- the scenarios


@dataclass
class Kill:
    """One kill -9 of a leader and how production came back."""

    node: str
    partitions_led: int
    resumed_seconds: float | None
    back_in_sync_seconds: float | None


@dataclass
class LeaderReport:
    """The leader-kill run: lifecycles, kills and the count of everything on the bus."""

    lifecycles: int
    completed: int
    outcomes: dict[str, int]
    kills: list[Kill]
    missing: dict[str, int]
    duplicates: dict[str, int]
    copies: int
    produced: dict[str, int]
    probe_acked: int
    probe_lost: int
    seconds: float


async def kill_leaders(h: Harness, cluster: KafkaCluster, profile: Profile) -> LeaderReport:
    """Concurrent lifecycles and prediction load while the leader of the busiest partitions is
    killed -9 `profile.kills` times, each time restarted and waited for until back in sync."""
    settings = h.settings
    await ensure_topics(settings, catalog=[*topics.CATALOG, topics.TopicSpec(PROBE_TOPIC, 3)])
    tag = uuid.uuid4().hex[:4]
    probe = Probe(settings)
    probing = asyncio.create_task(probe.run())
    began = time.monotonic()
    models = await begin_lifecycles(h, profile.lifecycles, "ha", seed=200)
    h.say(f"[cluster] {len(models)} lifecycles started; killing the busiest leader {profile.kills} times")
    kills: list[Kill] = []
    watched = [settings.topic(name) for name in (*BUSIEST, PROBE_TOPIC)]

    async def load() -> None:
        bus = Bus(settings.model_copy(update={"service_name": "cluster-load"}))
        await bus.start()
        try:
            for batch in range(profile.prediction_batches):
                await bus.publish(load_batch(f"ha-{tag}-load-{batch % 3}", batch))
                await asyncio.sleep(0.25)
        finally:
            await bus.stop()

    async def killer() -> None:
        by_id = {index: node for index, node in enumerate(cluster.nodes, 1)}
        for number in range(1, profile.kills + 1):
            await until(lambda: fully_replicated(settings, watched), timeout=120, every=1)
            await asyncio.sleep(2)
            # Leaders read just before the kill (a preferred-leader election may have just moved them).
            led = Counter((await leaders(settings, watched)).values())
            probe_leaders = await leaders(settings, [settings.topic(PROBE_TOPIC)])
            # The busiest leader among those leading a probe partition, so that its loss is measured.
            victim_id, count_led = max(
                ((node, n) for node, n in led.items() if node in probe_leaders.values()), key=lambda pair: pair[1]
            )
            probe_partitions = [p for (_, p), leader in probe_leaders.items() if leader == victim_id]
            victim = by_id[victim_id]
            moment = time.monotonic()
            await asyncio.to_thread(kill_node, victim)
            resumed = await _resumed(probe, moment, probe_partitions, timeout=60)
            await asyncio.sleep(2)
            await asyncio.to_thread(start_node, cluster, victim)
            synced = await until(lambda: fully_replicated(settings, watched), timeout=180, every=1)
            kills.append(Kill(victim.name, count_led, resumed, synced))
            h.say(
                f"[cluster] kill {number}: {victim.name} (led {count_led} partitions): writes resumed in "
                f"{resumed if resumed is None else round(resumed, 2)} s, back in sync "
                f"{synced if synced is None else round(synced, 1)} s after its restart"
            )

    await asyncio.gather(killer(), load())
    h.say("[cluster] kills done; waiting for every lifecycle to end")
    await h.platform.wait_ready()

    outcomes, report = await end_lifecycles(h, models, timeout=90 * profile.lifecycles)
    seconds = time.monotonic() - began
    probe.stopping = True
    await probing
    on_probe = {e for e in await _probe_values(settings)}
    lost = [value for value in probe.sent if value not in on_probe]
    return LeaderReport(
        lifecycles=len(models),
        completed=sum(outcomes.values()),
        outcomes=outcomes,
        kills=kills,
        missing=report.missing,
        duplicates=report.duplicates,
        copies=report.copies,
        produced=report.produced,
        probe_acked=len(probe.sent),
        probe_lost=len(lost),
        seconds=seconds,
    )


async def _true(value: bool) -> bool:
    return value


async def _resumed(probe: Probe, moment: float, partitions: list[int], *, timeout: float) -> float | None:
    """Seconds from `moment` until the probe wrote to every one of `partitions` again (None: not in time)."""
    await until(lambda: _true(probe.resumed_after(moment, partitions) is not None), timeout, 0.2)
    return probe.resumed_after(moment, partitions)


async def _probe_values(settings: Settings) -> list[bytes]:
    from shared.ops.tools import read_all

    return [record.value for record in await read_all(settings, settings.topic(PROBE_TOPIC), timeout=60)]


@dataclass
class QuorumLoss:
    """Two brokers of three stopped: what producers saw, and how the platform came back."""

    acked_during: int
    refused_during: dict[str, int]
    acked_lost: int
    resumed_seconds: float | None
    lifecycle_after: str | None
    processes_alive: bool


async def lose_two(h: Harness, cluster: KafkaCluster, outage: float = 20.0) -> QuorumLoss:
    """Stop two brokers of three: a write needs two in-sync replicas, so producers must block or
    fail, and nothing acknowledged may be lost. A lifecycle started during the outage must end
    once one broker is back."""
    settings = h.settings
    await ensure_topics(settings, catalog=[*topics.CATALOG, topics.TopicSpec(PROBE_TOPIC, 3)])
    await until(lambda: fully_replicated(settings, [settings.topic(PROBE_TOPIC)]), timeout=120)
    probe = Probe(settings)
    probing = asyncio.create_task(probe.run())
    await asyncio.sleep(2)
    down = cluster.nodes[1:]
    for node in down:
        await asyncio.to_thread(kill_node, node)
    moment = time.monotonic()
    model = f"quorum-{uuid.uuid4().hex[:4]}"
    with contextlib.suppress(Exception):
        await asyncio.wait_for(h.apply(light_spec(model)), timeout=10)  # the registry answers; its outbox waits
    await asyncio.sleep(outage)
    # Writes in flight at the kill may still be acknowledged (they had their replicas); after a
    # second, none may be.
    acked_during = sum(1 for times in probe.acked.values() for t in times if t > moment + 1.0)
    refused = dict(probe.refused)
    await asyncio.to_thread(start_node, cluster, down[0])
    back = time.monotonic()
    resumed = await _resumed(probe, back, [0, 1, 2], timeout=180)
    await asyncio.to_thread(start_node, cluster, down[1])
    await until(lambda: fully_replicated(settings, [settings.topic(PROBE_TOPIC)]), timeout=180)
    # The lifecycle of the outage: its spec (applied while the brokers were away) and its data.
    await h.apply(light_spec(model))
    store = ArtifactStore(settings)
    data = churn_frame(3000, seed=77).to_csv(index=False).encode()
    stored = await asyncio.to_thread(store.put_bytes, f"datasets/{model}/v1.csv", data)
    await h.publish(DataArrived(dataset=model, version="v1", uri=stored.uri, sha256=stored.sha256, format="csv"))

    async def finished() -> str | None:
        for _, event in await h.events(topics.ROLLOUT_CHANGED):
            if isinstance(event, RolloutChanged) and event.model == model and event.to_state in ENDED:
                return event.to_state
        return None

    async def ended() -> bool:
        return await finished() is not None

    await until(ended, timeout=300, every=3)
    probe.stopping = True
    await probing
    on_probe = set(await _probe_values(settings))
    lost = [value for value in probe.sent if value not in on_probe]
    h.say(
        f"[cluster] 2 of 3 brokers down {back - moment:.0f} s: {acked_during} writes acknowledged "
        f"(refused: {refused}); resumed {resumed} s after one came back; acknowledged and lost: {len(lost)}"
    )
    return QuorumLoss(
        acked_during=acked_during,
        refused_during=refused,
        acked_lost=len(lost),
        resumed_seconds=resumed,
        lifecycle_after=await finished(),
        processes_alive=not h.platform.dead(),
    )


def as_rows(report: Any) -> list[tuple[str, str]]:
    """A report's figures as table rows (for bench/faults.py)."""
    return [(name, str(value)) for name, value in vars(report).items()]
