"""Stopping background loops for sure, even one that swallowed a cancellation once."""

from __future__ import annotations

import asyncio

from shared.runtime.tasks import cancel_and_wait


async def test_a_loop_that_swallows_one_cancellation_still_stops() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if swallowed == 0:  # what asyncio.wait_for can do on 3.11
                    swallowed += 1
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0.01)
    assert await cancel_and_wait(task, timeout=5) is True
    assert task.cancelled() and swallowed == 1


async def test_a_task_that_never_stops_is_left_behind_after_the_timeout() -> None:
    released = False

    async def deaf() -> None:
        while not released:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf())
    await asyncio.sleep(0.01)  # running: a task cancelled before its first step just ends
    assert await cancel_and_wait(task, timeout=0.5) is False
    assert not task.done()
    released = True
    await task
    assert await cancel_and_wait(None) is True
