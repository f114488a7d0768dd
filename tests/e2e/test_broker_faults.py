"""Broker faults under a steady churn of source writes (issue 17). On a 3-node JetStream cluster with
TLS and R3 streams: the stream's leader killed with -9 in the middle of the churn, a follower killed
and its store deleted, the whole cluster stopped for 30 s. On one server: the server killed with
-9, and the network between the watcher and the broker and between the broker and the syncer made
slow and cut (a real Toxiproxy in between). For each: at the end the
stand-by equals deactivate(source) (``standby diff``'s comparison), and no copy ever went back to
an older source version (a watch on the stand-by records every version each copy took). Each
prints the time to recover (the fault over to the stand-by equal to the source) and the messages
delivered again (the syncer's skips of a version it had already written)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from schemas import annotations as ann
from schemas import subjects
from services.common.kube import ApiError, KubeClient
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from services.devenv.toxiproxy import LocalToxiproxy
from services.operate import diff
from tests.e2e.conftest import Pipeline, pipeline
from tests.support import env as h

OBJECTS = 20


@dataclass
class Versions:
    """Every source version each copy took in the stand-by, in the order it took them."""

    seen: dict[str, list[int]] = field(default_factory=dict)

    async def follow(self, dst: KubeClient, ns: str) -> None:
        path = f"/api/v1/namespaces/{ns}/configmaps"
        rv = (await dst.get(path))["metadata"]["resourceVersion"]
        while True:
            with contextlib.suppress(ApiError):
                async for event in dst.watch(path, resource_version=rv, label_selector=ann.MANAGED_SELECTOR):
                    meta = event["object"]["metadata"]
                    rv = meta.get("resourceVersion", rv)
                    version = (meta.get("annotations") or {}).get(ann.SOURCE_RESOURCE_VERSION)
                    if event["type"] in ("ADDED", "MODIFIED") and version:
                        self.seen.setdefault(meta["name"], []).append(int(version))

    def backwards(self) -> dict[str, list[int]]:
        return {name: taken for name, taken in self.seen.items() if taken != sorted(taken)}


async def churn(src: KubeClient, ns: str, stop: asyncio.Event, rate: float = 40.0) -> int:
    """Round-robin updates of OBJECTS ConfigMaps at about ``rate`` writes/s until ``stop``."""
    writes = 0
    while not stop.is_set():
        await h.configmap(src, ns, f"c{writes % OBJECTS}", {"v": str(writes)})
        writes += 1
        await asyncio.sleep(1 / rate)
    return writes


def stale_skips(plan: str) -> float:
    return REGISTRY.get_sample_value("standby_syncer_applies_total",
                                     {"plan": plan, "resource": "configmaps", "outcome": "skipped_stale"}) or 0.0


@contextlib.asynccontextmanager
async def under_churn(source: LocalCluster, registered: LocalCluster, broker: LocalNats, ns: str,
                      **services: Any) -> AsyncIterator[tuple[Pipeline, Callable[[], Awaitable[float]]]]:
    """The pipeline on ``broker`` (``services``: the watcher's and syncer's settings, e.g. their
    broker through a proxy) with ``ns`` protected and written to; yields it and a function that
    stops the churn and returns how long the stand-by then took to equal the source."""
    async with pipeline(source, registered, broker, **services) as pipe:
        await h.protect_configmaps(pipe.src, pipe.dst, ns)
        for i in range(OBJECTS):
            await h.configmap(pipe.src, ns, f"c{i}", {"v": "start"})
        await h.eventually(lambda: in_step(pipe, ns), timeout=60, interval=0.5)
        versions = Versions()
        stop = asyncio.Event()
        async with h.running(versions.follow(pipe.dst, ns), "versions"):
            writer = asyncio.create_task(churn(pipe.src, ns, stop))

            async def settle() -> float:
                stop.set()
                await writer
                started = time.monotonic()
                await h.eventually(lambda: in_step(pipe, ns), timeout=120, interval=0.5)
                return time.monotonic() - started
            try:
                yield pipe, settle
            finally:
                stop.set()
                await asyncio.gather(writer, return_exceptions=True)
            await asyncio.sleep(1.0)  # the last copies' watch events
        assert versions.backwards() == {}, versions.backwards()
        assert sum(len(v) for v in versions.seen.values()) > OBJECTS


async def in_step(pipe: Pipeline, ns: str) -> None:
    assert await diff.gather(pipe.dst, h.SYSTEM, ns) == []


def report(what: str, recovered: float, caught_up: float, plan: str, skips_before: float) -> None:
    again = stale_skips(plan) - skips_before
    print(f"{what}: a change made as the fault ended reached the stand-by {recovered:.1f}s later; the stand-by "
          f"equal to the source {caught_up:.1f}s after the churn stopped; {again:.0f} messages delivered again "
          f"(skipped as already applied)")


async def through_again(pipe: Pipeline, ns: str, marker: str) -> float:
    """Seconds until a change made now reaches the stand-by (the time to recover, end to end)."""
    started = time.monotonic()
    await h.configmap(pipe.src, ns, marker, {"at": str(time.time())})

    async def copied() -> None:
        try:
            await pipe.dst.get(f"/api/v1/namespaces/{ns}/configmaps/{marker}")
        except ApiError as exc:
            raise AssertionError(repr(exc)) from exc
    await h.eventually(copied, timeout=120, interval=0.1)
    return time.monotonic() - started


async def measured(source: LocalCluster, registered: LocalCluster, broker: LocalNats, ns: str, what: str,
                   fault: Callable[[Pipeline], Awaitable[str]], **services: Any) -> None:
    """``fault`` under churn (2 s into it); it returns what it did. Then a change must get through,
    the churn stops, the stand-by must equal the source; the figures are printed."""
    plan = f"{h.SYSTEM}/{ns}"
    async with under_churn(source, registered, broker, ns, **services) as (pipe, settle):
        skips = stale_skips(plan)
        await asyncio.sleep(2)
        done = await fault(pipe)
        recovered = await through_again(pipe, ns, "marker")
        caught_up = await settle()
    report(f"{what} ({done})" if done else what, recovered, caught_up, plan, skips)


async def test_the_streams_leader_killed_in_the_middle_of_the_churn(
        source: LocalCluster, registered: LocalCluster, nats_cluster: LocalNats) -> None:
    async def kill_the_leader(pipe: Pipeline) -> str:
        leader = nats_cluster.stream_leader(subjects.stream_name(h.SYSTEM, "bf-leader"))
        assert leader is not None
        nats_cluster.kill_node(leader)  # the cluster heals itself: the change gets through without it
        asyncio.get_running_loop().call_later(5, nats_cluster.start_node, leader)
        return f"{leader}, started again 5 s later"
    await measured(source, registered, nats_cluster, "bf-leader", "the stream's leader killed", kill_the_leader)


async def test_a_follower_killed_and_its_store_deleted_catches_up(
        source: LocalCluster, registered: LocalCluster, nats_cluster: LocalNats) -> None:
    stream = subjects.stream_name(h.SYSTEM, "bf-follower")

    async def lose_a_follower(pipe: Pipeline) -> str:
        follower = next(n.name for n in nats_cluster.servers if n.name != nats_cluster.stream_leader(stream))
        nats_cluster.kill_node(follower)
        nats_cluster.wipe_node(follower)
        await asyncio.sleep(5)
        nats_cluster.start_node(follower)

        async def replicas_current() -> None:
            info = await pipe.js.stream_info(stream)
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
            assert all(r.current for r in info.cluster.replicas or []), info.cluster
        await h.eventually(replicas_current, timeout=60, interval=0.5)
        return follower
    await measured(source, registered, nats_cluster, "bf-follower", "a follower killed, its store deleted",
                   lose_a_follower)


async def test_the_whole_cluster_stopped_for_30_seconds(
        source: LocalCluster, registered: LocalCluster, nats_cluster: LocalNats) -> None:
    async def stop_everything(pipe: Pipeline) -> str:
        nats_cluster.stop()
        await asyncio.sleep(30)
        nats_cluster.start()
        return ""
    await measured(source, registered, nats_cluster, "bf-all", "the whole cluster stopped 30 s", stop_everything)


async def test_a_single_server_killed_in_the_middle_of_the_churn(
        source: LocalCluster, registered: LocalCluster, tmp_path: Path) -> None:
    broker = LocalNats(tmp_path).start()

    async def kill(pipe: Pipeline) -> str:
        broker.kill()
        await asyncio.sleep(5)
        broker.start()
        return "started again 5 s later"
    try:
        await measured(source, registered, broker, "bf-single", "one server killed", kill)
    finally:
        broker.stop()


async def test_the_links_to_the_broker_slowed_and_cut(
        source: LocalCluster, registered: LocalCluster, tmp_path: Path) -> None:
    """The watcher reaches the broker through one proxy, the syncer through another: 300 ms of
    latency each way on both for 8 s, then the watcher's link cut for 10 s, then the syncer's."""
    broker = LocalNats(tmp_path).start()
    proxy = LocalToxiproxy(tmp_path / "toxiproxy").start()

    async def slow_then_cut(pipe: Pipeline) -> str:
        for name in ("watcher", "syncer"):
            for direction in ("upstream", "downstream"):
                proxy.add_toxic(name, f"slow-{direction}", "latency", stream=direction, latency=300, jitter=50)
        await asyncio.sleep(8)
        for name in ("watcher", "syncer"):
            for direction in ("upstream", "downstream"):
                proxy.remove_toxic(name, f"slow-{direction}")
        took = []
        for name in ("watcher", "syncer"):
            proxy.set_enabled(name, False)
            await asyncio.sleep(10)
            proxy.set_enabled(name, True)
            took.append(f"{name}'s link back: a change through in {await through_again(pipe, 'bf-links', name):.1f}s")
        return "; ".join(took)
    try:
        upstream = f"127.0.0.1:{broker.port}"
        through = {name: h.nats_settings(broker).model_copy(update={
            "url": f"nats://127.0.0.1:{proxy.proxy(name, upstream)}"}) for name in ("watcher", "syncer")}
        await measured(source, registered, broker, "bf-links", "links slowed 8 s, then cut 10 s each", slow_then_cut,
                       watcher={"nats": through["watcher"]}, syncer={"nats": through["syncer"]})
    finally:
        proxy.stop()
        broker.stop()
