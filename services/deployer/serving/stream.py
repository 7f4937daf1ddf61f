"""Streaming inference: serving's scorer reads the input topics of the models it serves
(`<prefix>.inputs.<model>`) and writes each message's predictions to the model's output topic,
read, scored and written in one Kafka transaction with the input offsets.

- The same predict core as HTTP: the rollout's routing (the canary split by the row's sticky field,
  else the message key, else the request id; exclusions; the stable version scoring a copy of
  the canary's rows, and a shadow that is scored and logged, never written), the same checks of
  the rows against the answering version's schema, micro-batched (a transaction's rows of one
  version are one model call), and logged to the monitor as HTTP answers are, once the
  transaction committed.
- Exactly once for read-committed consumers of the output topics: a transaction holds a batch's
  outputs, its dead letters and its input offsets (`send_offsets_to_transaction`), and commits
  all or nothing; a scorer killed mid-batch leaves an open transaction that its restart (same
  transactional id, `<prefix>.scorer.<replica>`) aborts, or the broker does after
  MODELBUS_STREAM_TRANSACTION_TIMEOUT_MS, and the batch is scored again from the committed offsets.
- A bad message (not JSON, not a row or a list of rows, a value the schema refuses) goes to the
  dead-letter topic with the reason, its partition and offset, in the same transaction; the
  stream goes on. A model that is being loaded holds its batch back (aborted, tried again).
- Memory stays bounded: a batch is at most MODELBUS_STREAM_BATCH_MESSAGES messages, scored before
  the next is fetched, and the consumer's fetch buffer is Kafka's per-partition byte limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from services.deployer.serving.metrics import Metrics
from services.deployer.serving.predictor import Outcome, Predictor, Refused
from shared.contract import topics
from shared.contract.envelope import describe_validation_error, encode
from shared.contract.streams import MAX_ROWS, REQUEST_ID_HEADER, STREAM_INPUT
from shared.contract.topics import TopicSpec
from shared.runtime.broker import aiokafka_options, ensure_topics
from shared.runtime.consume import dead_letter
from shared.runtime.settings import Settings

log = logging.getLogger("modelbus.serving.stream")
_SCALARS = frozenset({str, int, float, bool, type(None)})  # a row's values: JSON scalars
Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


@dataclass(frozen=True)
class Message:
    """An input message read as rows: their request ids and the key each is routed by."""

    record: Record
    rows: list[dict[str, Any]]
    ids: list[str]
    key: str | None
    listed: bool  # a list of rows (answered by a list), not one row


@dataclass(frozen=True)
class Bad:
    """An input message that cannot be scored, and why (the dead letter's kind and reason)."""

    record: Record
    kind: str
    reason: str


class Held(Exception):
    """A batch that cannot be scored yet (a model still loading): aborted and tried again."""


def model_of(settings: Settings, topic: str) -> str:
    """The model an input topic belongs to."""
    return topic.removeprefix(settings.topic(topics.INPUTS) + ".")


def read(model: str, record: Record) -> Message | Bad:
    """An input message's rows, or why it has none."""
    value = record.value
    if value is None:
        return Bad(record, "parse", "the message has no value; a row (JSON object) or a list of rows is expected")
    try:
        rows = orjson.loads(value)
    except orjson.JSONDecodeError as bad:
        return Bad(record, "parse", f"the value is not JSON: {bad}")
    if not _rows(rows):  # the contract's own validation says which part is wrong
        try:
            STREAM_INPUT.validate_python(rows)
            reason = "it is not"
        except ValidationError as exc:
            reason = describe_validation_error(exc)
        return Bad(
            record,
            "validation",
            f"the value must be a row (an object of feature values) or a list of 1 to {MAX_ROWS} rows: {reason}",
        )
    listed = isinstance(rows, list)
    rows = rows if listed else [rows]
    headers = dict(record.headers or ())
    given = headers.get(REQUEST_ID_HEADER)
    base = given.decode("utf-8", "replace")[:128] if given else f"{model}-{record.partition}-{record.offset}"
    ids = [f"{base}-{i}" for i in range(len(rows))] if listed else [base]
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    return Message(record, rows, ids, key, listed)


def _rows(value: Any) -> bool:
    """Whether a parsed value is a row or a list of rows (StreamInput), checked at C speed."""
    if type(value) is dict:
        return _SCALARS.issuperset(map(type, value.values()))
    if type(value) is not list or not 0 < len(value) <= MAX_ROWS:
        return False
    return all(type(row) is dict and _SCALARS.issuperset(map(type, row.values())) for row in value)


def answers_of(message: Message, model: str, answers: list[dict[str, Any]], at: datetime) -> bytes:
    """The output message of an input message: one prediction, or a list of them."""
    stamp = at.isoformat().replace("+00:00", "Z")
    found = [
        {
            "request_id": answer["request_id"],
            "key": message.key,
            "model": model,
            "version": answer["version"],
            "role": answer["role"],
            "prediction": answer["prediction"],
            **({"probabilities": answer["probabilities"]} if "probabilities" in answer else {}),
            "partition": message.record.partition,
            "offset": message.record.offset,
            "served_at": stamp,
        }
        for answer in answers
    ]
    return orjson.dumps(found if message.listed else found[0], option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass
class Scored:
    """What a batch of one model produced: output messages, dead letters, outcomes to log."""

    outputs: list[tuple[Message, bytes]]
    bad: list[Bad]
    outcomes: list[Outcome]


async def score(predictor: Predictor, model: str, records: list[Record]) -> Scored:
    """Score one model's messages of a batch: every row in one call of the predict core; when it
    refuses a row, message by message, so that only the bad ones are dead-lettered."""
    read_ = [read(model, r) for r in records]
    messages = [m for m in read_ if isinstance(m, Message)]
    bad = [m for m in read_ if isinstance(m, Bad)]
    if not messages:
        return Scored([], bad, [])
    try:
        target = await predictor.target(model)
    except Refused as refused:
        if refused.status == 503:
            raise Held(str(refused)) from None
        return Scored([], bad + [Bad(m.record, "handler", str(refused)) for m in messages], [])
    at = datetime.now(UTC)
    try:
        outcome = await _serve(predictor, target, messages)
    except Refused as refused:
        if refused.status >= 500:
            raise
        outputs, outcomes = [], []
        for message in messages:  # one at a time: which message is bad
            try:
                alone = await _serve(predictor, target, [message])
            except Refused as one:
                if one.status >= 500:
                    raise
                bad.append(Bad(message.record, "validation", str(one)))
                continue
            outputs.append((message, answers_of(message, model, alone.answers, at)))
            outcomes.append(alone)
        return Scored(outputs, bad, outcomes)
    outputs, start = [], 0
    for message in messages:
        end = start + len(message.rows)
        outputs.append((message, answers_of(message, model, outcome.answers[start:end], at)))
        start = end
    return Scored(outputs, bad, [outcome])


async def _serve(predictor: Predictor, target: Any, messages: list[Message]) -> Outcome:
    rows = [row for m in messages for row in m.rows]
    ids = [i for m in messages for i in m.ids]
    keys = [m.key for m in messages for _ in m.rows]
    # The row limit of one call is HTTP's; a transaction's rows are scored in calls of that size.
    limit = predictor.settings.serving_max_rows
    if len(rows) <= limit:
        # A message of one row names its bad fields `row.<feature>`; a list, `rows[i].<feature>`.
        single = len(messages) == 1 and not messages[0].listed
        where = "row" if single else "rows"
        return await predictor.serve(
            target, rows, ids[0], ids=ids, keys=keys, single=single, where=where, log_now=False
        )
    parts = [
        await predictor.serve(
            target,
            rows[i : i + limit],
            ids[i],
            ids=ids[i : i + limit],
            keys=keys[i : i + limit],
            where="rows",
            log_now=False,
        )
        for i in range(0, len(rows), limit)
    ]

    def record() -> None:
        for part in parts:
            part.record()

    return Outcome(target, ids[0], [a for p in parts for a in p.answers], record)


class Scorer:
    """The scorer of one serving process: a consumer of the input topics of the models it serves
    (group `<prefix>.scorer`) and a transactional producer."""

    def __init__(self, settings: Settings, predictor: Predictor, metrics: Metrics) -> None:
        self.settings = settings
        self.predictor = predictor
        self.metrics = metrics
        self.group = settings.topic(topics.SCORER)
        replica = settings.serving_replica or f"{socket.gethostname()}-{settings.serving_port}"
        self.transactional_id = f"{self.group}.{replica}"
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.created: set[str] = set()
        self.subscribed: frozenset[str] = frozenset()

    async def run(self) -> None:
        """Score until cancelled; a broker that goes away is reconnected to."""
        while True:
            try:
                await self._start()
                await self._score_forever()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scorer stopped (%s: %s); starting again in 2 s", type(exc).__name__, exc)
                await self._stop()
                await asyncio.sleep(2)

    async def close(self) -> None:
        """Stop the consumer and the producer (an open transaction is aborted by the broker)."""
        await self._stop()

    async def _start(self) -> None:
        options = aiokafka_options(self.settings)
        self.producer = AIOKafkaProducer(
            **options,
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self.settings.stream_transaction_timeout_ms,
            acks="all",
            linger_ms=2,
            # A transaction's partitions are added again while the previous one's markers are being
            # written (CONCURRENT_TRANSACTIONS): retried after 10 ms, as Java's producer does it.
            retry_backoff_ms=10,
            max_request_size=self.settings.max_message_bytes,
        )
        await self.producer.start()  # fences a former scorer of this id, aborting what it left open
        self.consumer = AIOKafkaConsumer(
            **options,
            group_id=self.group,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=5_000,
        )
        await self.consumer.start()
        self.subscribed = frozenset()
        log.info("scorer %s started", self.transactional_id)

    async def _stop(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self.consumer = self.producer = None

    async def _follow(self) -> None:
        """Create the topics of models that went live here, and read the input topics of every
        model served here."""
        assert self.consumer is not None
        live = frozenset(self.predictor.host.live)
        new = sorted(live - self.created)
        if new:
            specs = [TopicSpec(f(m), topics.STREAM_PARTITIONS) for m in new for f in (topics.inputs, topics.outputs)]
            await ensure_topics(self.settings, catalog=specs, acls=False)
            self.created |= set(new)
            log.info("stream topics ready for %s", ", ".join(new))
        if live != self.subscribed:
            names = [self.settings.topic(topics.inputs(m)) for m in sorted(live)]
            if names:
                self.consumer.subscribe(topics=names)
            else:
                self.consumer.unsubscribe()
            self.subscribed = live

    async def _score_forever(self) -> None:
        assert self.consumer is not None
        followed = 0.0
        while True:
            if time.monotonic() - followed > 2:
                await self._follow()
                followed = time.monotonic()
            if not self.subscribed:
                await asyncio.sleep(0.5)
                continue
            batch = await self.consumer.getmany(timeout_ms=200, max_records=self.settings.stream_batch_messages)
            if batch:
                await self._transact(batch)

    async def _transact(self, batch: dict[TopicPartition, list[Record]]) -> None:
        """Score a batch and commit its outputs, dead letters and offsets together; on any
        failure abort, go back to the batch's first offsets and try again."""
        assert self.consumer is not None and self.producer is not None
        by_model: dict[str, list[Record]] = defaultdict(list)
        for tp, records in batch.items():
            by_model[model_of(self.settings, tp.topic)].extend(records)
        try:
            async with self.producer.transaction():
                scored = {m: await score(self.predictor, m, records) for m, records in sorted(by_model.items())}
                sends = []
                for model, result in scored.items():
                    out = self.settings.topic(topics.outputs(model))
                    for message, value in result.outputs:
                        headers = [(REQUEST_ID_HEADER, message.ids[0].encode()), ("content-type", b"application/json")]
                        sends.append(await self.producer.send(out, value, key=message.record.key, headers=headers))
                    for bad in result.bad:
                        sends.append(await self._dead_letter(model, bad))
                await asyncio.gather(*sends)
                offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
                await self.producer.send_offsets_to_transaction(offsets, self.group)
        except Exception as exc:
            self.metrics.stream_transactions.labels("aborted").inc()
            for tp, records in batch.items():
                self.consumer.seek(tp, records[0].offset)
            if isinstance(exc, Held):
                log.info("stream batch held back: %s", exc)
                await asyncio.sleep(1)
                return
            raise
        self.metrics.stream_transactions.labels("committed").inc()
        self.metrics.stream_batch.observe(sum(len(r) for r in batch.values()))
        for model, result in scored.items():
            for outcome in result.outcomes:
                outcome.record()  # to the monitor, once the predictions are committed
                versions = Counter(answer["version"] for answer in outcome.answers)
                for version, rows in versions.items():
                    self.metrics.stream_rows.labels(model, str(version)).inc(rows)
            for bad in result.bad:
                self.metrics.stream_dead.labels(model, bad.kind).inc()

    async def _dead_letter(self, model: str, bad: Bad) -> asyncio.Future[Any]:
        assert self.producer is not None
        record = bad.record
        letter = dead_letter(
            record,
            list(record.headers or ()),
            consumer=self.group,
            reason=bad.reason,
            kind=bad.kind,
            attempts=1,
            max_bytes=self.settings.max_message_bytes,
        )
        log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, bad.reason)
        outgoing = encode(letter, source=f"modelbus/serving/{model}")
        future: asyncio.Future[Any] = await self.producer.send(
            self.settings.topic(topics.DEAD_LETTER), outgoing.value, key=outgoing.key, headers=outgoing.headers
        )
        return future
