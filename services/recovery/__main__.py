"""``python -m services.recovery``: the failover operator (kopf) plus /metrics and /healthz.

It needs only the destination; NATS is optional (for ``fromOriginal``, and the stand-by's mirror
of the record: :mod:`services.recovery.mirroring`)."""

from __future__ import annotations

import asyncio
import logging
import socket

import kopf
import uvloop
from kopf._core.engines.peering import Identity  # a NewType of str, not re-exported by kopf

from services.common import kube, logs, looping, running, streams
from services.common.guarding import Guard
from services.common.keys import StreamKeys
from services.common.settings import NatsSettings
from services.recovery import activating, mirroring, operator
from services.recovery.settings import RecoverySettings

log = logging.getLogger("services.recovery")

BROKER_RETRY_SECONDS = 5.0


def identity() -> Identity:
    """Who this operator is in kopf's records: the pod's name. kopf's default asks the password
    database for the user's name, and an image running as an arbitrary UID (65532 here, a random
    one on OpenShift) has no entry there."""
    return Identity(f"standby-recovery@{socket.gethostname()}")


async def use_broker(settings: RecoverySettings, stream: activating.StreamReader) -> None:
    """Connect (trying again every few seconds: recovery works without the broker and uses it once
    it is there), give the connection to ``fromOriginal``, and keep the mirrors if configured."""
    assert settings.nats is not None
    said = False
    while True:
        try:
            nc = await asyncio.wait_for(streams.connect(settings.nats, name="standby-recovery"), 5)
            break
        except Exception as exc:  # recovery must work with the sync side gone
            if not said:
                log.warning("stream unreachable (%r); fromOriginal reports it per object until it is back", exc)
                said = True
            await asyncio.sleep(BROKER_RETRY_SECONDS)
    stream.use(nc.jetstream())
    try:
        if settings.mirror.domain:
            keeper = mirroring.MirrorKeeper(nc, settings.mirror.domain, settings.mirror.replicas)
            await keeper.run(settings.mirror.interval_seconds)
        else:
            await asyncio.Event().wait()  # hold the connection until stopped
    finally:
        stream.use(None)
        await nc.close()


async def main(settings: RecoverySettings) -> None:
    client = kube.own_client(settings.kube.kubeconfig, user_agent="standby-recovery")
    nats_settings = settings.nats or NatsSettings()
    keys = StreamKeys.of_service(client, settings.kube.namespace, nats_settings)
    stream = activating.StreamReader(None, nats_settings.subject_prefix, keys, configured=settings.nats is not None)
    guard = Guard("recovery", settings.tasks)
    tasks = [] if settings.nats is None else [
        guard.start("broker", lambda: use_broker(settings, stream), kind="broker")]
    ready = asyncio.Event()
    operator_task = kopf.operator(
        registry=operator.build_registry(client), memo=operator.memo_for(client, settings, stream),
        standalone=True, clusterwide=True, ready_flag=ready, identity=identity())
    try:
        await running.until_signalled(operator_task, serve=settings.serve,
                                      healthy=lambda: ready.is_set() and guard.healthy(), name="recovery")
    finally:
        await looping.cancel_all(tasks)
        await client.close()


def run() -> None:
    """The ``standby-recovery`` entrypoint (the image's command for this component)."""
    settings = RecoverySettings()
    logs.configure(log_format=settings.serve.log_format, level=settings.serve.log_level)
    uvloop.run(main(settings))


if __name__ == "__main__":
    run()
