"""Run a service's main coroutine with /metrics and /healthz until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from services.common import serving
from services.common.settings import ServeSettings

log = logging.getLogger(__name__)


async def until_signalled(main: Coroutine[Any, Any, None], *, serve: ServeSettings, healthy: Callable[[], bool],
                          name: str) -> None:
    runner = await serving.serve(host=serve.host, port=serve.port, healthy=healthy)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(main, name=name)
    waiter = asyncio.create_task(stop.wait(), name="stop")
    lag = asyncio.create_task(serving.measure_loop_lag(), name="loop lag")
    log.info("%s started (metrics and health on %s:%d)", name, serve.host, serving.bound_port(runner))
    done, _ = await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    for t in (task, waiter, lag):
        t.cancel()
    await asyncio.gather(task, waiter, lag, return_exceptions=True)
    if task in done and task.exception() is not None:
        log.error("%s failed", name, exc_info=task.exception())
    await runner.cleanup()
    log.info("%s stopped", name)
