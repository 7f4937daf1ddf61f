"""Stopping a background task for sure. On Python 3.11, `asyncio.wait_for` can swallow a
cancellation that lands as its inner wait completes (fixed in 3.12), and a loop built on it then
keeps running: a stop that cancels once and awaits would wait for ever. `cancel_and_wait` cancels
again until the task is done, for at most `timeout` seconds."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger("shared.runtime.tasks")


async def cancel_and_wait(task: asyncio.Task[Any] | None, *, timeout: float = 10.0) -> bool:
    """Cancel `task` (again, every 0.2 s, until it ends); True when it ended within `timeout`."""
    if task is None:
        return True
    deadline = time.monotonic() + timeout
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
        if time.monotonic() > deadline:
            log.warning("task %s did not stop in %.0f s; left behind", task.get_name(), timeout)
            return False
    if not task.cancelled() and task.exception() is not None:
        log.warning("task %s ended with %r", task.get_name(), task.exception())
    return True
