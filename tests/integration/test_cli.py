"""What producers and ops do by hand: hand-written events from Kafka's console producer, the modelbus CLI,
dlq replay."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.contract import topics
from shared.contract.envelope import Envelope
from shared.contract.events import DataArrived, DeadLettered
from shared.ops.tools import read_dead_letters
from shared.runtime.broker import ensure_acls
from shared.runtime.bus import Bus
from shared.runtime.settings import Settings
from shared.runtime.topicreader import read_letter
from shared.runtime.uow import HandlerContext
from tests.integration.conftest import eventually, free_port, service_process
from tests.integration.kafka_helpers import record_effect
from tests.integration.test_alerter import publish
from tests.support.foreign import console_produce

ROOT = Path(__file__).resolve().parents[2]
MODELBUS = Path(sys.executable).parent / "modelbus"
SCHEMA = json.loads((ROOT / "schemas/events/data-arrived.json").read_text())


def recorder(bus: Bus, seen: list[Envelope]) -> None:
    @bus.consumer(topics.DATA_ARRIVED, group="registry-like", events=[DataArrived])
    async def on_data(event: DataArrived, ctx: HandlerContext) -> None:
        seen.append(ctx.envelope)
        await record_effect(ctx.session, ctx.consumer, ctx.envelope.id)


async def cli(
    settings: Settings, *args: str, stdin: bytes | None = None, api: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELBUS_TOPIC_PREFIX": settings.topic_prefix, "MODELBUS_OTLP_ENDPOINT": "", **(api or {})}
    return await asyncio.to_thread(
        subprocess.run, [str(MODELBUS), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.fixture
async def settings(settings: Settings) -> Settings:
    """The test's platform prefix, with its ACLs: the console producer writes as an outside producer."""
    await ensure_acls(settings)
    return settings


def foreign_produce(settings: Settings, body: dict[str, Any], headers: dict[str, str]) -> None:
    console_produce(settings, settings.topic(topics.DATA_ARRIVED), "churn", json.dumps(body), headers)


async def test_a_hand_written_event_from_kafkas_console_producer_is_parsed_and_a_broken_one_dead_lettered(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], start_bus: Any
) -> None:
    seen: list[Envelope] = []
    bus = Bus(settings, sessions=sessions)
    recorder(bus, seen)
    await start_bus(bus)
    body = {
        "schema_version": "1.0",
        "correlation_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-22T10:00:00Z",
        "dataset": "churn",
        "version": "2026-11-22",
        "uri": "s3://datasets/churn/2026-11-22.csv",
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "format": "csv",
        "row_count": 10000,
        "producer": "console-producer",
    }
    jsonschema.validate(body, SCHEMA)  # written by hand to match schemas/, as a non-Python producer would
    headers = {
        "ce_id": "java-1",
        "ce_source": "/producers/java",
        "ce_type": "io.modelbus.DataArrived",
        "ce_specversion": "1.0",
        "ce_time": "2026-11-22T10:00:00Z",
        "content-type": "application/json",
    }
    foreign_produce(settings, body, headers)
    broken = {k: v for k, v in body.items() if k != "uri"}
    foreign_produce(settings, broken, {**headers, "ce_id": "java-2"})

    async def parsed() -> bool:
        return bool(seen)

    await eventually(parsed, what="the console producer's event to be consumed")
    event = seen[0].event
    assert isinstance(event, DataArrived)
    assert (event.dataset, event.version, event.row_count, event.producer) == (
        "churn",
        "2026-11-22",
        10000,
        "console-producer",
    )
    assert seen[0].id == "java-1" and seen[0].source == "/producers/java"

    async def dead_lettered() -> bool:
        return bool(await read_dead_letters(settings))

    await eventually(dead_lettered, what="the broken event in the dead-letter topic")
    (letter,) = [item.letter for item in await read_dead_letters(settings)]
    assert letter.original_event_id == "java-2"
    assert "field 'uri': Field required" in letter.reason
    assert [e.id for e in seen] == ["java-1"]


async def test_dlq_replay_with_a_fixed_body_brings_the_message_back(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], start_bus: Any, tmp_path: Path
) -> None:
    seen: list[Envelope] = []
    bus = Bus(settings, sessions=sessions)
    recorder(bus, seen)
    await start_bus(bus)
    foreign_produce(
        settings,
        {"dataset": "churn", "version": "v9", "uri": "ftp://old-host/churn.csv"},
        {
            "ce_id": "needs-fix",
            "ce_source": "/producers/legacy",
            "ce_type": "io.modelbus.DataArrived",
            "ce_specversion": "1.0",
        },
    )

    async def dead_lettered() -> bool:
        return bool(await read_dead_letters(settings))

    await eventually(dead_lettered, what="the bad message in the dead-letter topic")
    # The CLI reads and replays dead letters through the registry's API (an operator, audited).
    port = free_port()
    registry_env = {
        **os.environ,
        "MODELBUS_TOPIC_PREFIX": settings.topic_prefix,
        "MODELBUS_OTLP_ENDPOINT": "",
        "MODELBUS_API_TOKENS": "ops-token=operator:olga",
        "MODELBUS_REGISTRY_PORT": str(port),
    }
    api = {"MODELBUS_API_URL": f"http://127.0.0.1:{port}", "MODELBUS_API_TOKEN": "ops-token"}
    async with service_process("services.registry", registry_env, port, tmp_path / "registry.log"):
        listing = await cli(settings, "dlq", "ls", "--json", "--consumer", "registry-like", api=api)
        assert listing.returncode == 0, listing.stderr
        (entry,) = [json.loads(line) for line in listing.stdout.splitlines()]
        assert "field 'uri'" in entry["reason"]

        shown = await cli(settings, "dlq", "show", entry["id"], api=api)
        fixed = json.loads(shown.stdout) | {"uri": "s3://datasets/churn-v9.csv"}
        (tmp_path / "fixed.json").write_text(json.dumps(fixed))
        replayed = await cli(
            settings, "dlq", "replay", entry["id"], "--value-file", str(tmp_path / "fixed.json"), api=api
        )
        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed {entry['id']} to {settings.topic(topics.DATA_ARRIVED)}" in replayed.stdout
        async with httpx.AsyncClient(base_url=api["MODELBUS_API_URL"]) as http:
            audit = await http.get(
                "/v1/audit", params={"action": "replay-dead-letter"}, headers={"Authorization": "Bearer ops-token"}
            )
        assert [(a["actor"], a["detail"]["letter"]) for a in audit.json()][:1] == [("olga", entry["id"])]

    async def handled() -> bool:
        return bool(seen)

    await eventually(handled, what="the replayed message to be handled")
    assert seen[0].id == "needs-fix"
    assert seen[0].event.uri == "s3://datasets/churn-v9.csv"  # type: ignore[attr-defined]
    assert seen[0].extra.get("modelbus_replayed") == "1"


async def test_dead_letters_are_read_a_page_at_a_time_newest_first_and_one_by_its_id(
    settings: Settings, tmp_path: Path
) -> None:
    letters = [
        DeadLettered(
            consumer="registry-like", reason=f"letter {index}", error_type="validation", attempts=1,
            original_topic=settings.topic(topics.DATA_ARRIVED), original_partition=0, original_offset=index,
            original_key_b64=None, original_value_b64="e30=", original_headers=[],
        )
        for index in range(7)
    ]  # fmt: skip
    await publish(settings, *letters)  # one key: one partition, in this order
    port = free_port()
    registry_env = {
        **os.environ, "MODELBUS_TOPIC_PREFIX": settings.topic_prefix, "MODELBUS_OTLP_ENDPOINT": "",
        "MODELBUS_API_TOKENS": "view-token=viewer:vic", "MODELBUS_REGISTRY_PORT": str(port),
    }  # fmt: skip
    pages: list[list[str]] = []
    ids: dict[str, str] = {}
    async with (
        service_process("services.registry", registry_env, port, tmp_path / "registry.log"),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer view-token"}) as http,
    ):
        url: str | None = "/v1/dead-letters?limit=3"
        while url is not None:
            answer = await http.get(url)
            assert answer.status_code == 200, answer.text
            pages.append([letter["reason"] for letter in answer.json()])
            ids |= {letter["reason"]: letter["id"] for letter in answer.json()}
            url = answer.links.get("next", {}).get("url")
        bad = await http.get("/v1/dead-letters", params={"before": "the start"})
    assert pages == [["letter 6", "letter 5", "letter 4"], ["letter 3", "letter 2", "letter 1"], ["letter 0"]]
    assert bad.status_code == 400 and "not a page cursor" in bad.json()["detail"]
    assert (await read_letter(settings, ids["letter 4"])).letter.reason == "letter 4"
    partition, offset = ids["letter 6"].split(":")
    with pytest.raises(LookupError, match=f"no dead letter '{partition}:{int(offset) + 1}'"):
        await read_letter(settings, f"{partition}:{int(offset) + 1}")


async def test_cli_publish_validates_computes_the_digest_and_tail_shows_the_event(
    settings: Settings, tmp_path: Path
) -> None:
    publish = ["publish", "data-arrived", "--dataset", "churn", "--version", "v1"]
    refused = await cli(settings, *publish, "--uri", "s3://datasets/churn.csv", "--sha256", "not-a-digest")
    assert refused.returncode == 2
    assert "field 'sha256'" in refused.stderr

    data = tmp_path / "churn.csv"
    data.write_text("age,plan,churned\n33,pro,1\n")
    published = await cli(settings, *publish, "--uri", data.as_uri(), "--rows", "1")
    assert published.returncode == 0, published.stderr
    assert "published DataArrived churn@v1" in published.stdout

    tailed = await cli(settings, "tail", "data-arrived", "--from-beginning", "--max", "1", "--idle", "20")
    assert tailed.returncode == 0, tailed.stderr
    assert "io.modelbus.DataArrived" in tailed.stdout
    assert "ce_source: /modelbus/cli" in tailed.stdout
    assert hashlib.sha256(data.read_bytes()).hexdigest() in tailed.stdout
