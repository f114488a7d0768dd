"""A 3-node JetStream cluster with TLS on client connections and routes, as `standby dev up
--nats-cluster 3` runs it: the services' connection (several URLs, the CA), plan streams with
three replicas (an R1 stream is raised to R3 in place), and no acknowledged message lost when the
stream's leader is killed or a follower loses its store."""

from __future__ import annotations

import asyncio
import socket
import ssl
import uuid

import nats
import nats.errors
import pytest
from nats.js import JetStreamContext

from schemas import api, subjects
from services.common import settings, streams
from services.devenv.natsd import LocalNats
from tests.support import env as h


def nats_settings(cluster: LocalNats, **kwargs: object) -> settings.NatsSettings:
    assert cluster.pki is not None
    return settings.NatsSettings.model_validate({"url": cluster.url, "user": cluster.user,
                                                 "password": cluster.password, "tls_ca": cluster.pki.ca_cert,
                                                 **kwargs})


async def publish_all(js: JetStreamContext, stream: str, subject: str, values: range) -> None:
    """Each message until the stream acknowledges it (an election in between answers nothing)."""
    for i in values:
        while True:
            try:
                await js.publish(subject, str(i).encode(), stream=stream, timeout=2,
                                 headers={"Nats-Msg-Id": f"{subject}-{i}"})
                break
            except nats.errors.Error:  # timed out, no responders, no stream response, an API error
                await asyncio.sleep(0.2)


async def values(js: JetStreamContext, stream: str, subject: str) -> list[int]:
    return [int(m.data) async for m in streams.scan(js, stream, subject)]


async def test_plan_streams_are_replicated_and_survive_their_leader_and_a_lost_store(nats_cluster: LocalNats) -> None:
    cluster = nats_cluster
    nc = await streams.connect(nats_settings(cluster), name="test-cluster")
    try:
        js = nc.jetstream()
        name = f"rep-{uuid.uuid4().hex[:6]}"
        stream = subjects.stream_name("standby-system", name)
        subject = subjects.object_subject(prefix="standby", plan_namespace="standby-system", plan_name=name, group="",
                                          version="v1", resource="configmaps", namespace="ns", name="c")
        # Created R1 (an older install), then raised to R3 in place by the setting.
        info = await streams.ensure_stream(js, nats_settings(cluster), "standby-system", name,
                                           api.History(states_per_object=0))
        assert info.config.num_replicas == 1
        await publish_all(js, stream, subject, range(0, 50))
        info = await streams.ensure_stream(js, nats_settings(cluster, stream_replicas=3), "standby-system", name,
                                           api.History(states_per_object=0))
        assert info.config.num_replicas == 3

        async def replicated() -> None:
            """Every replica current (after a fault: a leader elected again, the restarted node caught up)."""
            try:
                info = await js.stream_info(stream)
            except nats.errors.Error as exc:
                raise AssertionError(f"no answer from the stream yet: {exc!r}") from exc
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
            assert all(r.current for r in info.cluster.replicas or []), info.cluster
        await h.eventually(replicated, timeout=30)

        # kill -9 the leader in the middle of a burst; the acknowledged messages all stay.
        leader = cluster.stream_leader(stream)
        assert leader is not None
        burst = asyncio.ensure_future(publish_all(js, stream, subject, range(50, 150)))
        await asyncio.sleep(0.1)
        cluster.kill_node(leader)
        await burst
        cluster.start_node(leader)
        await h.eventually(replicated, timeout=60)
        assert await values(js, stream, subject) == list(range(150))

        # A follower loses its store: started again, it catches up from the others.
        follower = next(n.name for n in cluster.servers if n.name != cluster.stream_leader(stream))
        cluster.kill_node(follower)
        cluster.wipe_node(follower)
        await publish_all(js, stream, subject, range(150, 200))
        cluster.start_node(follower)
        await h.eventually(replicated, timeout=60)
        assert await values(js, stream, subject) == list(range(200))
        await js.delete_stream(stream)
    finally:
        await nc.close()


async def test_the_cluster_speaks_only_tls_with_its_own_ca(nats_cluster: LocalNats) -> None:
    cluster = nats_cluster
    plain = [u.replace("tls://", "nats://") for u in cluster.urls]
    with pytest.raises((nats.errors.Error, OSError, ssl.SSLError)):
        await nats.connect(plain, user=cluster.user, password=cluster.password, allow_reconnect=False,
                           connect_timeout=2, max_reconnect_attempts=0)
    with pytest.raises((nats.errors.Error, OSError, ssl.SSLError)):  # the system's CAs do not know ours
        await nats.connect(cluster.urls, user=cluster.user, password=cluster.password, allow_reconnect=False,
                           connect_timeout=2, max_reconnect_attempts=0, tls=ssl.create_default_context())
    assert cluster.monitor("/routez")["num_routes"] >= 2
    # A route speaks TLS from its first byte, and only with a certificate of the cluster's CA.
    assert cluster.pki is not None
    with_cert = ssl.create_default_context(cafile=str(cluster.pki.ca_cert))
    with_cert.load_cert_chain(str(cluster.pki.client_cert), str(cluster.pki.client_key))
    without = ssl.create_default_context(cafile=str(cluster.pki.ca_cert))
    for node in cluster.servers:
        with socket.create_connection(("127.0.0.1", node.cluster_port), timeout=2) as raw, \
                with_cert.wrap_socket(raw, server_hostname="127.0.0.1") as route:
            assert route.recv(4096).startswith(b"INFO ")
        with socket.create_connection(("127.0.0.1", node.cluster_port), timeout=2) as raw, \
                pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"), \
                without.wrap_socket(raw, server_hostname="127.0.0.1") as route:
            route.recv(4096)
