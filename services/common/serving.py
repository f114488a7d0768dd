"""/metrics and /healthz for every service, on one small aiohttp server, and the metrics every
service has (event-loop lag)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import prometheus_client
from aiohttp import web

LOOP_LAG_SECONDS = prometheus_client.Histogram(
    "standby_event_loop_lag_seconds", "How late a timer fired: time the event loop was held by other work",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))


async def measure_loop_lag(interval: float = 0.05) -> None:
    """Sleep ``interval`` again and again and record how late each wake-up came: a held event loop
    delays every message, and this tells it apart from a slow server."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(interval)
        LOOP_LAG_SECONDS.observe(max(0.0, time.monotonic() - start - interval))


async def serve(*, host: str, port: int, healthy: Callable[[], bool],
                registry: prometheus_client.CollectorRegistry = prometheus_client.REGISTRY) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=prometheus_client.generate_latest(registry),
                            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok = healthy()
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        return int(addr[1])
    raise RuntimeError("server not bound")
