"""Guarded tasks: a crash is logged with its traceback, counted, restarted with capped backoff, and
/healthz knows when a task has been down longer than the grace."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from services.common.guarding import Guard
from services.common.settings import TaskSettings

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failures(task: str) -> float:
    return REGISTRY.get_sample_value("standby_task_failures_total",
                                     {"component": "test", "task": task, "plan": "ns/p"}) or 0.0


async def test_a_crashing_task_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    third = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        third.set()
        await asyncio.Event().wait()  # runs from now on

    before = failures("flaky")
    guard = Guard("test", TaskSettings(backoff_initial_seconds=0.01, backoff_max_seconds=0.02))
    task = guard.start("flaky ns/p", flaky, kind="flaky", plan="ns/p")
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(third.wait(), 5)
    assert failures("flaky") - before == 2
    crashes = [r for r in caplog.records if "task flaky ns/p crashed" in r.getMessage()]
    assert len(crashes) == 2 and crashes[0].exc_info is not None  # with the traceback
    assert "boom 1" in caplog.text
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()  # cancellation stops it for good, never swallowed
    assert guard.down() == {}


async def test_a_task_that_returns_is_started_again() -> None:
    runs = 0
    again = asyncio.Event()

    async def returns() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            again.set()
            await asyncio.Event().wait()

    guard = Guard("test", TaskSettings(backoff_initial_seconds=0.01))
    task = guard.start("returns", returns, kind="returns")
    await asyncio.wait_for(again.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_piece_of_work_is_retried_after_a_crash_until_it_returns() -> None:
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("first try fails")

    guard = Guard("test", TaskSettings(backoff_initial_seconds=0.01))
    await asyncio.wait_for(guard.start("work", work, kind="work", until_done=True), 5)
    assert runs == 2 and guard.down() == {}


async def test_health_fails_once_a_task_is_down_longer_than_the_grace_and_recovers() -> None:
    clock = Clock()
    crash = asyncio.Event()
    crashed = asyncio.Event()
    settings = TaskSettings(backoff_initial_seconds=0.01, backoff_max_seconds=0.01, recovered_after_seconds=30,
                            unhealthy_after_seconds=60)

    async def run() -> None:
        await crash.wait()
        crash.clear()
        crashed.set()
        raise RuntimeError("down")

    guard = Guard("test", settings, clock=clock)
    task = guard.start("pipeline", run, kind="pipeline")
    assert guard.healthy() and guard.down() == {}
    clock.now = 100.0
    crash.set()
    await asyncio.wait_for(crashed.wait(), 5)
    await asyncio.sleep(0.05)  # restarted, running again
    assert guard.down() == {"pipeline": 0.0}
    for clock.now in (125.0, 150.0):  # keeps failing, each run shorter than 30 s
        crashed.clear()
        crash.set()
        await asyncio.wait_for(crashed.wait(), 5)
        await asyncio.sleep(0.05)
    clock.now = 155.0
    assert guard.down() == {"pipeline": 55.0} and guard.healthy()  # within the grace
    clock.now = 161.0  # down since 100: past the grace
    assert not guard.healthy()
    clock.now = 181.0  # the last restart (at 150) has now run 31 s without failing: up again
    assert guard.healthy() and guard.down() == {}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_two_tasks_cannot_share_a_name() -> None:
    async def main() -> None:
        guard = Guard("test")
        task = guard.start("one", asyncio.Event().wait, kind="one")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="already guarded"):
            guard.start("one", asyncio.Event().wait, kind="one")  # type: ignore[arg-type]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
