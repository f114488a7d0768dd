"""The two loops every service repeats: re-reading plans forever, and stopping a set of tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from services.common.kube import ApiError, UnreachableError

log = logging.getLogger(__name__)


async def resync_forever(sync_once: Callable[[], Awaitable[None]], *, interval_seconds: float,
                         set_healthy: Callable[[bool], None]) -> None:
    """Call ``sync_once`` every ``interval_seconds``; an unreadable cluster makes us unhealthy, not dead."""
    while True:
        try:
            await sync_once()
            set_healthy(True)
        except (ApiError, UnreachableError) as exc:
            set_healthy(False)
            log.warning("cannot read plans: %s", exc)
        await asyncio.sleep(interval_seconds)


async def cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel and await every task (their CancelledError is theirs, not ours)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
