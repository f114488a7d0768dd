"""/metrics and /healthz for every service, on one small aiohttp server."""

from __future__ import annotations

from collections.abc import Callable

import prometheus_client
from aiohttp import web


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
