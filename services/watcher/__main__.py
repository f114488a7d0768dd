"""``python -m services.watcher``: settings, logging, metrics, then the supervisor until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from services.common import kube, logs, serving, streams
from services.watcher.settings import WatcherSettings
from services.watcher.supervisor import Supervisor

log = logging.getLogger("services.watcher")


async def main(settings: WatcherSettings) -> None:
    own = kube.KubeClient.from_kubeconfig(settings.kube.kubeconfig) if settings.kube.kubeconfig else (
        kube.KubeClient(kube.in_cluster_credentials()))
    nc = await streams.connect(settings.nats, name="standby-watcher")
    supervisor = Supervisor(own, nc, settings)
    runner = await serving.serve(host=settings.serve.host, port=settings.serve.port,
                                 healthy=lambda: supervisor.healthy and nc.is_connected)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(supervisor.run(), name="supervisor")
    log.info("watcher started (metrics on :%d)", serving.bound_port(runner))
    await asyncio.wait([task, asyncio.create_task(stop.wait(), name="stop")], return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await nc.drain()
    await own.close()
    await runner.cleanup()
    log.info("watcher stopped")


if __name__ == "__main__":
    settings = WatcherSettings()
    logs.configure(log_format=settings.serve.log_format, level=settings.serve.log_level)
    asyncio.run(main(settings))
