"""``python -m services.recovery``: the failover operator (kopf) plus /metrics and /healthz.

It needs only the destination; NATS is optional (for ``fromOriginal``)."""

from __future__ import annotations

import asyncio
import logging
import socket

import kopf
import uvloop
from kopf._core.engines.peering import Identity  # a NewType of str, not re-exported by kopf

from services.common import kube, logs, running, streams
from services.common.keys import StreamKeys
from services.common.settings import NatsSettings
from services.recovery import activating, operator
from services.recovery.settings import RecoverySettings

log = logging.getLogger("services.recovery")


def identity() -> Identity:
    """Who this operator is in kopf's records: the pod's name. kopf's default asks the password
    database for the user's name, and an image running as an arbitrary UID (65532 here, a random
    one on OpenShift) has no entry there."""
    return Identity(f"standby-recovery@{socket.gethostname()}")


async def main(settings: RecoverySettings) -> None:
    client = kube.own_client(settings.kube.kubeconfig, user_agent="standby-recovery")
    nc = None
    if settings.nats is not None:
        try:
            nc = await asyncio.wait_for(streams.connect(settings.nats, name="standby-recovery"), 5)
        except Exception as exc:  # recovery must work with the sync side gone
            log.warning("stream unreachable (%r); fromOriginal will report it per object", exc)
    nats_settings = settings.nats or NatsSettings()
    keys = StreamKeys.of_service(client, settings.kube.namespace, nats_settings)
    stream = activating.StreamReader(nc.jetstream() if nc else None, nats_settings.subject_prefix, keys)
    ready = asyncio.Event()
    operator_task = kopf.operator(
        registry=operator.build_registry(client), memo=operator.memo_for(client, settings, stream),
        standalone=True, clusterwide=True, ready_flag=ready, identity=identity())
    await running.until_signalled(operator_task, serve=settings.serve, healthy=ready.is_set, name="recovery")
    if nc is not None:
        await nc.close()
    await client.close()


def run() -> None:
    """The ``standby-recovery`` entrypoint (the image's command for this component)."""
    settings = RecoverySettings()
    logs.configure(log_format=settings.serve.log_format, level=settings.serve.log_level)
    uvloop.run(main(settings))


if __name__ == "__main__":
    run()
