"""``python -m services.watcher``: settings, logging, metrics, then the supervisor until SIGTERM."""

from __future__ import annotations

import uvloop

from services.common import kube, logs, running, streams
from services.watcher.settings import WatcherSettings
from services.watcher.supervisor import Supervisor


async def main(settings: WatcherSettings) -> None:
    own = kube.own_client(settings.kube.kubeconfig, user_agent="standby-watcher")
    nc = await streams.connect(settings.nats, name="standby-watcher")
    supervisor = Supervisor(own, nc, settings)
    await running.until_signalled(
        supervisor.run(), serve=settings.serve, name="watcher",
        healthy=lambda: supervisor.healthy and supervisor.guard.healthy() and nc.is_connected)
    await nc.drain()
    await own.close()


def run() -> None:
    """The ``standby-watcher`` entrypoint (the image's command for this component)."""
    settings = WatcherSettings()
    logs.configure(log_format=settings.serve.log_format, level=settings.serve.log_level)
    uvloop.run(main(settings))


if __name__ == "__main__":
    run()
