"""The two loops every service repeats: re-reading plans forever, and stopping a set of tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Protocol

from services.common.kube import ApiError, UnreachableError

log = logging.getLogger(__name__)


class Supervising(Protocol):
    healthy: bool

    async def sync_once(self) -> None: ...

    async def stop(self) -> None: ...


async def supervise(supervisor: Supervising, *, interval_seconds: float) -> None:
    """Re-read the plans every ``interval_seconds`` until cancelled, then stop what runs.

    An unreadable cluster makes the supervisor unhealthy, not dead."""
    try:
        while True:
            try:
                await supervisor.sync_once()
                supervisor.healthy = True
            except (ApiError, UnreachableError) as exc:
                supervisor.healthy = False
                log.warning("cannot read plans: %s", exc)
            await asyncio.sleep(interval_seconds)
    finally:
        await supervisor.stop()


async def cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel and await every task (their CancelledError is theirs, not ours)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
