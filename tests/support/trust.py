"""The attacks of issue 33 against a running platform (the hostile corpus's, after its other phases):
what anyone with the outside producer's credential tries on the bus, what a leaked service
credential tries (the consumers' own checks), and model files that would run code. Each case must
be refused with the reason named (Kafka's authorization error, a dead letter, a 4xx, a rejection)
and change nothing: no rejected version served, no spec replaced, no alert raised, no code run.

Used by the hostile corpus (tests/support/hostile.py), phase `trust`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from shared.contract import topics
from shared.contract.envelope import decode, encode
from shared.contract.events import (
    Event,
    ModelEvaluated,
    ModelRegistered,
    ModelSpecApplied,
    ModelTrained,
    RolloutChanged,
    RolloutCommanded,
    TrafficShare,
    TrainingFailed,
)
from shared.contract.topics import Principal
from shared.ops import credentials
from shared.ops.demo import FEATURES
from shared.ops.example_data import churn_frame
from shared.ops.tools import read_all, read_dead_letters
from shared.runtime.artifacts import ArtifactStore
from shared.runtime.broker import aiokafka_options
from tests.support.craft import EXEC_CHAIN, crafted, payload

if TYPE_CHECKING:
    from tests.support.hostile import Corpus

SOURCE = "/attacker"


async def forge(corpus: Corpus, principal: Principal, event: Event) -> str:
    """Publish `event` as `principal`: 'written', or Kafka's error."""
    message = encode(event, source=SOURCE)
    producer = AIOKafkaProducer(
        **aiokafka_options(credentials.as_principal(corpus.settings, principal)), request_timeout_ms=10_000
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            corpus.settings.topic(event.topic), message.value, key=message.key, headers=message.headers
        )
    except KafkaError as exc:
        return type(exc).__name__
    finally:
        await producer.stop()
    return "written"


async def read_as(corpus: Corpus, principal: Principal, topic: str) -> str:
    """Fetch from a topic as `principal`: 'read', or Kafka's error."""
    consumer = AIOKafkaConsumer(
        **aiokafka_options(credentials.as_principal(corpus.settings, principal)), enable_auto_commit=False
    )
    await consumer.start()
    try:
        partition = TopicPartition(corpus.settings.topic(topic), 0)
        if partition.topic not in await consumer.topics():
            return str(TopicAuthorizationFailedError.__name__)  # not even described to it
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        await consumer.getmany(partition, timeout_ms=500)
    except KafkaError as exc:
        return type(exc).__name__
    finally:
        await consumer.stop()
    return "read"


async def served_versions(corpus: Corpus, rows: int = 40) -> set[int]:
    """The versions serving answers the model with."""
    batch = churn_frame(rows * 2, seed=33).dropna()[FEATURES].head(rows).astype(object).to_dict("records")
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(f"{corpus.serving}/v1/models/{corpus.model}:predict", json={"instances": batch})
        answer.raise_for_status()
        return {int(item["version"]) for item in answer.json()["predictions"]}


async def letters_of(corpus: Corpus, key: str) -> dict[str, str]:
    """consumer group -> reason of the dead letters whose original key is `key`."""
    found = {}
    for stored in await read_dead_letters(corpus.settings):
        if base64.b64decode(stored.letter.original_key_b64 or "").decode(errors="replace") == key:
            found[stored.letter.consumer.rsplit(".", 1)[-1]] = stored.letter.reason
    return found


async def waited(check: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
    """`check()` once it gives something truthy (or its last answer after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(2)


async def run(corpus: Corpus, folder: Path) -> None:
    """Every case of the phase, recorded on the corpus."""
    await outsider(corpus)
    await leaked_services(corpus)
    await model_files(corpus, folder)


# ---------------------------------------------------------------- an outside producer's credential


async def outsider(corpus: Corpus) -> None:
    """What the `producer` principal (every outside producer has it) tries beyond data and labels."""
    model, denied = corpus.model, TopicAuthorizationFailedError.__name__
    page = f"PAGE {uuid.uuid4().hex[:8]}: wire money to mallory"  # what the forged alert would say
    before = await served_versions(corpus)
    spec = await current_spec(corpus)
    forged: list[tuple[str, Event]] = [
        ("RolloutChanged to a version the evaluator never passed", forged_route(model, 99)),
        (
            "ModelEvaluated passing a version",
            ModelEvaluated(
                model=model, version=99, champion_version=None, passed=True, decision="approved", gates=[],
                metrics={}, test_rows=0,
            ),
        ),
        ("RolloutCommanded in an operator's name", RolloutCommanded(model=model, command="pause", actor="olga")),
        (
            "ModelSpecApplied with revision 2147483000",
            spec.model_copy(update={"revision": 2_147_483_000, "applied_by": "mallory"}),
        ),
        (
            "TrainingFailed paging on-call",
            TrainingFailed(
                model=model, run_id="forged", dataset=model, dataset_version="v1", stage="fit",
                reason=page,
            ),
        ),
    ]  # fmt: skip
    for case, event in forged:
        outcome = await forge(corpus, "producer", event)
        corpus.record(f"producer forges {case}", "trust", denied, outcome, outcome == denied)
    for topic in (topics.PREDICTIONS_LOGGED, topics.DEAD_LETTER, topics.MODEL_SPEC_APPLIED):
        outcome = await read_as(corpus, "producer", topic)
        corpus.record(f"producer reads {topic}", "trust", denied, outcome, outcome == denied)
    anonymous = corpus.settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    admin = AIOKafkaAdminClient(**aiokafka_options(anonymous), request_timeout_ms=3000)
    try:
        await admin.start()
        listed = f"listed {len(await admin.list_topics())} topics"
    except KafkaError as exc:
        listed = type(exc).__name__
    finally:
        await admin.close()
    corpus.record("a client without credentials lists topics", "trust", "no connection", listed, "listed" not in listed)
    after = await served_versions(corpus)
    alerts = await alert_texts(corpus)
    corpus.record(
        "after the forgeries: served versions, alerts",
        "trust",
        f"still {sorted(before)}, no alert with the forged text",
        f"{sorted(after)}, {sum(page in a for a in alerts)} forged alert(s)",
        after == before and not any(page in a for a in alerts),
    )


def forged_route(model: str, version: int) -> RolloutChanged:
    """A rollout that puts all traffic on `version`."""
    return RolloutChanged(
        model=model, rollout_id="forged", candidate_version=version, stable_version=None, from_state="canary",
        to_state="promoted", step=0, traffic=[TrafficShare(version=version, percent=100, role="stable")],
        reason="forged", actor="mallory",
    )  # fmt: skip


async def current_spec(corpus: Corpus) -> ModelSpecApplied:
    """The model's spec as the registry last published it."""
    found = [
        e
        for r in await read_all(corpus.settings, topics.MODEL_SPEC_APPLIED)
        if isinstance(e := decode(r.value, list(r.headers or ())).event, ModelSpecApplied) and e.model == corpus.model
    ]
    return max(found, key=lambda e: e.revision)


async def alert_texts(corpus: Corpus) -> list[str]:
    """Every alert's labels and annotations, as text."""
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(f"{corpus.alerter}/api/v2/alerts", headers=corpus.auth("viewer"))
        answer.raise_for_status()
        return [str(alert) for alert in answer.json()]


# ---------------------------------------------------------------- a leaked service credential


async def leaked_services(corpus: Corpus) -> None:
    """What a service's leaked credential can write, the consumers still check."""
    model = corpus.model
    before = await served_versions(corpus)
    rejected = await rejected_version(corpus)
    spec = await current_spec(corpus)
    forged_spec = spec.model_copy(update={"revision": 2_147_483_000, "applied_by": "mallory"})
    key = model
    outcome = await forge(corpus, "registry", forged_spec)
    consumers = set(ModelSpecApplied.consumed_by)

    async def refused_by_all() -> dict[str, str]:
        found = {c: r for c, r in (await letters_of(corpus, key)).items() if "2147483000" in r}
        return found if set(found) >= consumers else {}

    letters = await waited(refused_by_all)
    corpus.record(
        "registry's credential: a spec revision that skips ahead",
        "trust",
        f"dead-lettered by {', '.join(sorted(consumers))}: skips ahead",
        f"{outcome}; " + "; ".join(f"{c}: {r[:80]}" for c, r in sorted(letters.items())),
        outcome == "written" and set(letters) >= consumers and all("skips ahead" in r for r in letters.values()),
    )
    if rejected is not None:
        outcome = await forge(corpus, "deployer", forged_route(model, rejected))
        await asyncio.sleep(5)
        after = await served_versions(corpus)
        async with httpx.AsyncClient(timeout=30) as http:
            pinned = await http.post(
                f"{corpus.serving}/v2/models/{model}/versions/{rejected}/infer", json=v2_body(), timeout=30
            )
        corpus.record(
            f"deployer's credential: RolloutChanged to rejected v{rejected}",
            "trust",
            f"still served by {sorted(before)}; v{rejected} pinned: 404 not rolled out",
            f"{outcome}; served by {sorted(after)}; pinned {pinned.status_code} {pinned.text[:100]}",
            after == before and pinned.status_code == 404 and "not rolled out" in pinned.text,
        )
    command = RolloutCommanded(model=model, command="rollback", actor="olga", reason="forged")
    outcome = await forge(corpus, "registry", command)

    async def refusal() -> str:
        reason = (await letters_of(corpus, model)).get("deployer", "")
        return reason if "rollback" in reason else ""

    reason = await waited(refusal)
    after = await served_versions(corpus)
    corpus.record(
        "registry's credential: a rollback without its audit entry",
        "trust",
        "dead-lettered by the deployer: no audit id; nothing rolled back",
        f"{outcome}; {reason[:160]}; served by {sorted(after)}",
        "no audit id" in reason and after == before,
    )


async def rejected_version(corpus: Corpus) -> int | None:
    """A version of the model the evaluator rejected (the corpus's tampered artifact), if any."""
    for record in await read_all(corpus.settings, topics.MODEL_EVALUATED):
        event = decode(record.value, list(record.headers or ())).event
        if isinstance(event, ModelEvaluated) and event.model == corpus.model and event.decision == "rejected":
            return event.version
    return None


def v2_body() -> dict[str, Any]:
    row = churn_frame(50, seed=34).dropna()[FEATURES].astype(object).to_dict("records")[0]
    inputs = [
        {"name": k, "shape": [1], "datatype": "FP64" if isinstance(v, int | float) else "BYTES", "data": [v]}
        for k, v in row.items()
    ]
    return {"inputs": inputs}


# ---------------------------------------------------------------- model files that would run code


async def model_files(corpus: Corpus, folder: Path) -> None:
    """The exec-chain file, imported by an operator and registered with a leaked trainer credential."""
    marker = folder / "code-ran"
    attack_rows = churn_frame(300, seed=35)
    attack_rows[FEATURES[0]] = attack_rows[FEATURES[0]].astype(object)
    attack_rows.loc[attack_rows.index[0], FEATURES[0]] = payload(str(marker))
    reference = attack_rows.to_csv(index=False).encode()
    file = crafted(EXEC_CHAIN)
    async with httpx.AsyncClient(timeout=120) as http:
        answer = await http.post(
            f"{corpus.registry}/v1/models/{corpus.model}/import",
            files={"model": ("model.skops", file), "reference": ("reference.csv", reference)},
            data={"reason": "notebook model"},
            headers=corpus.auth("operator"),
        )
        audit = await http.get(
            f"{corpus.registry}/v1/audit",
            params={"target": corpus.model, "action": "import", "limit": 5},
            headers=corpus.auth("viewer"),
        )
    last = audit.json()[0] if audit.status_code == 200 and audit.json() else {}
    corpus.record(
        "an operator imports the exec-chain skops file",
        "trust",
        "422 naming builtins.exec, audited refused, no code run",
        f"{answer.status_code} {answer.text[:160]}; audit {last.get('outcome')}; ran: {marker.exists()}",
        answer.status_code == 422
        and "builtins.exec" in answer.text
        and last.get("outcome") == "refused"
        and not marker.exists(),
    )
    await trained_with_crafted_file(corpus, file, attack_rows, marker)


async def trained_with_crafted_file(corpus: Corpus, file: bytes, rows: pd.DataFrame, marker: Path) -> None:
    """The file uploaded with the S3 key, then registered through a leaked trainer credential: the
    evaluator refuses it unloaded."""
    original = next(
        e
        for r in await read_all(corpus.settings, topics.MODEL_TRAINED)
        if isinstance(e := decode(r.value, list(r.headers or ())).event, ModelTrained) and e.model == corpus.model
    )
    store = ArtifactStore(corpus.settings)
    run_id = f"attack-{uuid.uuid4().hex[:8]}"
    split = io.BytesIO()
    rows.to_parquet(split, index=False)
    replaced = {"model.skops": file, "test-split.parquet": split.getvalue()}
    artifacts = []
    for artifact in original.artifacts:
        if artifact.name == "model.onnx":
            continue  # the evaluator must open the skops file
        if artifact.name in replaced:
            stored = store.put_bytes(f"artifacts/{corpus.model}/{run_id}/{artifact.name}", replaced[artifact.name])
            artifact = artifact.model_copy(update={"uri": stored.uri, "sha256": stored.sha256})
        artifacts.append(artifact)
    trained = original.model_copy(update={"run_id": run_id, "artifacts": artifacts})
    outcome = await forge(corpus, "trainer", trained)

    async def verdict() -> ModelEvaluated | None:
        versions = {
            e.version
            for r in await read_all(corpus.settings, topics.MODEL_REGISTERED)
            if isinstance(e := decode(r.value, list(r.headers or ())).event, ModelRegistered) and e.run_id == run_id
        }
        for record in await read_all(corpus.settings, topics.MODEL_EVALUATED):
            event = decode(record.value, list(record.headers or ())).event
            if isinstance(event, ModelEvaluated) and event.model == corpus.model and event.version in versions:
                return event
        return None

    judged = await waited(verdict, timeout=120)
    failed = [f"{g.name}: {g.detail}" for g in judged.gates if not g.passed] if judged else []
    corpus.record(
        "trainer's credential: ModelTrained naming the exec-chain file",
        "trust",
        "rejected at artifact_types naming builtins.exec, no code run",
        f"{outcome}; {judged.decision if judged else 'no verdict'}; {'; '.join(failed)[:160]}; ran: {marker.exists()}",
        judged is not None
        and judged.decision == "rejected"
        and any("builtins.exec" in f for f in failed)
        and not marker.exists(),
    )
