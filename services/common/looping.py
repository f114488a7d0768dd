"""The two loops every service repeats: re-reading plans forever, and stopping a set of tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from services.common import plans
from services.common.guarding import Guard
from services.common.kube import ApiError, KubeClient, UnreachableError
from services.common.leasing import PlanLeases

log = logging.getLogger(__name__)
T = TypeVar("T")


async def at_once() -> None:
    """A wait that is over at once (where nothing needs waiting for)."""


class Supervising(Protocol):
    healthy: bool

    async def sync_once(self) -> None: ...

    async def stop(self) -> None: ...


async def supervise(supervisor: Supervising, *, interval_seconds: float, plans_from: KubeClient | None = None,
                    guard: Guard | None = None, leases: PlanLeases | None = None) -> None:
    """Re-read the plans every ``interval_seconds`` until cancelled, then stop what runs; with
    ``plans_from`` (and the ``guard`` that runs it), also at once whenever a plan there changes
    (:func:`plans.follow_changes`). With ``leases``, keep this replica's share of the plans in a
    guarded task, pass again whenever the plans it holds change, and give them all back once what
    runs has stopped.

    An unreadable cluster makes the supervisor unhealthy, not dead."""
    changed = leases.changed if leases is not None else asyncio.Event()
    follower = None if plans_from is None or guard is None else guard.start(
        "plan changes", lambda: plans.follow_changes(plans_from, changed), kind="plans")
    keeper = None if leases is None or guard is None else guard.start("plan leases", leases.run, kind="leases")
    try:
        while True:
            changed.clear()  # a change from here on is read by this pass or triggers the next
            try:
                await supervisor.sync_once()
                supervisor.healthy = True
            except (ApiError, UnreachableError) as exc:
                supervisor.healthy = False
                log.warning("cannot read plans: %s", exc)
            except Exception:  # a defect: logged, unhealthy, tried again at the next pass
                supervisor.healthy = False
                log.exception("a pass over the plans failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_seconds):
                    await changed.wait()
    finally:
        if follower is not None:
            await cancel_all([follower])
        await supervisor.stop()
        if keeper is not None:
            await cancel_all([keeper])
        if leases is not None:
            await leases.release_all()


async def for_each(items: Iterable[T], one: Callable[[T], Awaitable[None]], *, at_once: int = 16) -> None:
    """``await one(item)`` for every item, ``at_once`` side by side, until all have finished; then
    the first failure, if any, is raised. A supervisor's pass starts its plans this way: one after
    the other, twenty new plans waited up to 6 s for the ones before them (docs/benchmarks.md
    "Scale")."""
    gate = asyncio.Semaphore(at_once)

    async def gated(item: T) -> None:
        async with gate:
            await one(item)

    results = await asyncio.gather(*(gated(item) for item in items), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def cancel_all(tasks: Iterable[asyncio.Task[None]], *, again_after_seconds: float = 5.0) -> None:
    """Cancel every task and wait until all have finished.

    Their cancellation is theirs, not ours: if the caller itself is cancelled meanwhile, that
    propagates (``await task`` inside ``suppress(CancelledError)`` would swallow it, and a
    supervisor cancelled while stopping a plan would carry on forever).

    A task still running ``again_after_seconds`` after its cancellation swallowed it (on Python
    3.11 ``asyncio.wait_for``, which nats-py uses, can turn a cancellation that meets its timeout
    into a ``TimeoutError``), and it is cancelled again. Waiting for it forever hung the syncer's
    supervisor in the scale benchmark: no plan was started or stopped any more."""
    tasks = list(tasks)
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after_seconds)
        for task in pending:
            log.warning("task %s is still running %.0fs after it was cancelled; cancelling it again",
                        task.get_name(), again_after_seconds)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.warning("task %s failed while stopping: %r", task.get_name(), task.exception())
