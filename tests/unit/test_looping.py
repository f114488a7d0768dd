"""Stopping tasks: the caller's own cancellation must never be swallowed."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from services.common import looping

pytestmark = pytest.mark.unit


async def test_cancel_all_waits_for_every_task() -> None:
    tasks = [asyncio.create_task(asyncio.sleep(10)) for _ in range(3)]
    await looping.cancel_all(tasks)
    assert all(t.cancelled() for t in tasks)


async def test_cancel_all_cancels_again_a_task_that_swallowed_its_cancellation() -> None:
    async def swallows_once() -> None:  # as a wait_for meeting its timeout can on Python 3.11
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        await asyncio.sleep(10)

    task = asyncio.create_task(swallows_once())
    await asyncio.sleep(0)
    async with asyncio.timeout(2):
        await looping.cancel_all([task], again_after_seconds=0.1)
    assert task.cancelled()


async def test_cancel_all_does_not_swallow_the_callers_cancellation() -> None:
    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
            raise

    child = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    caller = asyncio.create_task(looping.cancel_all([child]))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait([child])


async def test_for_each_runs_side_by_side_within_the_bound_and_raises_after_all_finished() -> None:
    busy, most, finished = 0, 0, []

    async def one(i: int) -> None:
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        await asyncio.sleep(0.01)
        busy -= 1
        finished.append(i)
        if i == 2:
            raise ValueError("plan 2 cannot start")

    with pytest.raises(ValueError, match="plan 2"):
        await looping.for_each(range(10), one, at_once=4)
    assert most == 4
    assert sorted(finished) == list(range(10)), "one failure does not leave the others half done"
