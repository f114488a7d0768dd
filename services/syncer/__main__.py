"""``python -m services.syncer``: settings, logging, metrics, then the supervisor until SIGTERM."""

from __future__ import annotations

import logging

import uvloop

from services.common import kube, logs, running, streams
from services.syncer.settings import SyncerSettings
from services.syncer.supervisor import Supervisor

log = logging.getLogger("services.syncer")


async def main(settings: SyncerSettings) -> None:
    own = kube.own_client(settings.kube.kubeconfig, connections=settings.destination_connections,
                          user_agent="standby-syncer")
    nc = await streams.connect(settings.nats, name="standby-syncer")
    supervisor = Supervisor(own, nc, settings)
    await running.until_signalled(
        supervisor.run(), serve=settings.serve, name="syncer",
        healthy=lambda: supervisor.healthy and supervisor.guard.healthy() and nc.is_connected)
    await nc.drain()
    await own.close()


def run() -> None:
    """The ``standby-syncer`` entrypoint (the image's command for this component)."""
    settings = SyncerSettings()
    logs.configure(log_format=settings.serve.log_format, level=settings.serve.log_level)
    uvloop.run(main(settings))


if __name__ == "__main__":
    run()
