"""Operator tools behind the CLI: following a topic, reading and replaying dead letters."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from aiokafka import ConsumerRecord
from rich.console import Console

from shared.runtime.settings import Settings
from shared.runtime.topicreader import (
    assigned_consumer,
    find_letter,
    full_topic,
    original_value,
    read_all,
    read_dead_letters,
    replay,
)

__all__ = ["find_letter", "original_value", "read_all", "read_dead_letters", "replay", "tail"]


async def tail(
    settings: Settings,
    name: str,
    *,
    from_beginning: bool,
    limit: int | None,
    idle: float | None,
    out: Console,
    render: Callable[[ConsumerRecord[bytes, bytes]], str | None] | None = None,
) -> int:
    """Print messages of a topic with their headers until `limit` or `idle` seconds of silence.

    With `render`, each message is printed as the one line it returns instead (None: skipped).
    """
    topic = full_topic(settings, name)
    consumer, assigned = await assigned_consumer(settings, topic)
    seen = 0
    try:
        if from_beginning:
            await consumer.seek_to_beginning(*assigned)
        else:
            await consumer.seek_to_end(*assigned)
        last = time.monotonic()
        while limit is None or seen < limit:
            batch = await consumer.getmany(timeout_ms=500)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                if idle is not None and time.monotonic() - last > idle:
                    break
                continue
            last = time.monotonic()
            for record in sorted(records, key=lambda r: r.timestamp):
                if render is not None:
                    line = render(record)
                    if line is not None:
                        out.print(line, markup=False)
                        seen += 1
                    if limit is not None and seen >= limit:
                        break
                    continue
                headers = {name: value.decode("utf-8", "replace") for name, value in record.headers or ()}
                stamp = time.strftime("%H:%M:%S", time.localtime(record.timestamp / 1000))
                out.print(
                    f"{stamp} {record.topic}[{record.partition}]@{record.offset} "
                    f"key={(record.key or b'').decode('utf-8', 'replace')} "
                    f"{headers.get('ce_type', '(no ce_type)')} id={headers.get('ce_id', '-')}",
                    markup=False,
                    style="bold",
                )
                for header, value in headers.items():
                    out.print(f"  {header}: {value}", markup=False, style="dim")
                try:
                    body = json.dumps(json.loads(record.value or b""), indent=2)
                except ValueError:
                    body = repr(record.value)
                out.print(body, markup=False)
                seen += 1
                if limit is not None and seen >= limit:
                    break
    finally:
        await consumer.stop()
    return seen
