"""Replicas sharing plans through one Lease per plan (services.common.leasing), on a real API server:
the plans spread evenly and each is held by exactly one replica; a replica that joins gets its share
from the others (given back only once their work stopped); a replica that dies has its plans taken
over within the Lease duration of its last renewal, after it stopped counting them as its own; one
that stops cleanly hands them over at once. A replica whose renewals are late (its API server slow,
through a real Toxiproxy) pauses its plans and goes on with them once renewed, or stops them once
another replica took them; a plan is never held by two at once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.common.kube import KubeClient
from services.common.leasing import PlanLeases
from services.common.settings import LeaseSettings
from services.devenv.clusters import LocalCluster
from services.devenv.toxiproxy import LocalToxiproxy
from tests.support import env as h

FAST = {"duration_seconds": 3, "renew_deadline_seconds": 2.0, "retry_seconds": 0.5}
PLANS = {f"team-{i // 10}/plan-{i}": str(uuid.uuid4()) for i in range(30)}


@dataclass
class Work:
    """What a replica's supervisor runs: the plans, and how often one was stopped."""
    running: set[str] = field(default_factory=set)
    stops: int = 0


@dataclass
class Replica:
    leases: PlanLeases
    task: asyncio.Task[None]
    supervisor: asyncio.Task[None]
    work: Work

    def kill(self) -> None:
        """As kill -9: nothing is given back."""
        self.task.cancel()
        self.supervisor.cancel()


async def supervise(leases: PlanLeases, work: Work) -> None:
    """What a supervisor does with its Leases: says which plans exist, and runs (here: claims to
    run) exactly the ones assigned to it, a little after it learns of a change."""
    while True:
        leases.want(PLANS)
        await asyncio.sleep(0.05)
        assigned = leases.assigned()
        work.stops += len(work.running - assigned)
        work.running = set(assigned)
        leases.serving(assigned)
        leases.changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await leases.changed.wait()


@dataclass
class Replicas:
    client: KubeClient
    namespace: str
    component: str
    started: list[Replica]

    def start(self, identity: str, client: KubeClient | None = None) -> Replica:
        leases = PlanLeases(client or self.client, self.namespace, self.component,
                            LeaseSettings(identity=identity, **FAST))
        work = Work()
        replica = Replica(leases, asyncio.create_task(leases.run()), asyncio.create_task(supervise(leases, work)),
                          work)
        self.started.append(replica)
        return replica


@contextlib.asynccontextmanager
async def replicas(cluster: LocalCluster, component: str) -> AsyncIterator[Replicas]:
    """Replicas of ``component`` to start, their Leases in a namespace of their own."""
    namespace = f"leases-{uuid.uuid4().hex[:6]}"
    async with KubeClient.from_kubeconfig(cluster.kubeconfig) as client:
        await h.namespace(client, namespace)
        group = Replicas(client, namespace, component, [])
        try:
            yield group
        finally:
            for r in group.started:
                r.kill()
            await asyncio.gather(*(t for r in group.started for t in (r.task, r.supervisor)), return_exceptions=True)
            for r in group.started:
                await r.leases.close()


def spread(replicas: list[Replica]) -> list[int]:
    return sorted(len(r.leases.held()) for r in replicas)


async def spread_becomes(replicas: list[Replica], counts: list[int], *, timeout: float = 10) -> float:
    """Wait until the replicas hold ``counts`` plans; the seconds it took."""
    began = time.monotonic()

    async def check() -> None:
        assert spread(replicas) == counts
    await h.eventually(check, timeout=timeout, interval=0.05)
    return time.monotonic() - began


async def exclusive(group: Replicas, alive: list[Replica]) -> None:
    """Every plan held by exactly one replica, in the Leases and in what the replicas think."""
    held = [r.leases.held() for r in alive]
    assert sum(len(s) for s in held) == len(PLANS), [len(s) for s in held]
    assert set().union(*held) == set(PLANS)
    leases = (await group.client.get(f"/apis/coordination.k8s.io/v1/namespaces/{group.namespace}/leases",
                                     labelSelector=f"dr.standby.dev/lease-of={group.component}"))["items"]
    holders = {lease["metadata"]["annotations"]["dr.standby.dev/plan"]: lease["spec"]["holderIdentity"]
               for lease in leases if lease["metadata"]["labels"]["dr.standby.dev/lease-role"] == "plan"}
    for r, mine in zip(alive, held, strict=True):
        assert {plan for plan, holder in holders.items() if holder == r.leases.identity} == set(mine)


async def test_replicas_share_the_plans_evenly_and_take_over_a_dead_ones(destination: LocalCluster) -> None:
    async with replicas(destination, "replicated") as group:
        a = group.start("replica-a")
        await spread_becomes([a], [30])
        b, c = group.start("replica-b"), group.start("replica-c")  # they join: a gives back 20, after stopping them

        async def even() -> None:
            assert spread([a, b, c]) == [10, 10, 10]
            await exclusive(group, [a, b, c])
        await h.eventually(even, timeout=15)

        c_plans = c.leases.held()
        c.kill()
        killed = time.monotonic()

        async def c_let_go() -> None:
            assert c.leases.held() == frozenset()  # by its own clock, before anyone may take over
            assert not (c_plans & (a.leases.held() | b.leases.held()))
        await h.eventually(c_let_go, timeout=FAST["duration_seconds"], interval=0.05)

        async def taken_over() -> None:
            assert spread([a, b]) == [15, 15]
            await exclusive(group, [a, b])
        await h.eventually(taken_over, timeout=15, interval=0.05)
        took = time.monotonic() - killed
        # The lease duration from the last renewal, which came at most a retry before the kill.
        assert took <= FAST["duration_seconds"] + 1.0, took

        a.kill()  # a clean stop: its work and its keeper stop, then it gives its Leases back
        await asyncio.gather(a.task, a.supervisor, return_exceptions=True)
        await a.leases.release_all()
        assert await spread_becomes([b], [30]) < FAST["duration_seconds"] / 2


async def test_a_replica_restarted_under_its_name_serves_its_plans_again_at_once(destination: LocalCluster) -> None:
    """A pod's container restarted in place keeps the pod's name: its Leases are its own."""
    async with replicas(destination, "restarted") as group:
        first = group.start("pod-0")
        await spread_becomes([first], [30])
        first.kill()
        again = group.start("pod-0")
        assert await spread_becomes([again], [30]) < FAST["duration_seconds"] / 2


async def test_a_deleted_plans_lease_goes_and_a_recreated_plan_starts_afresh(destination: LocalCluster) -> None:
    namespace, component = f"leases-{uuid.uuid4().hex[:6]}", "deleted"
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as client:
        await h.namespace(client, namespace)
        leases = PlanLeases(client, namespace, component, LeaseSettings(identity="only", **FAST))
        leases.want({"ns/a": "uid-1", "ns/b": "uid-2"})
        task = asyncio.create_task(leases.run())
        try:
            async def both() -> None:
                assert leases.held() == {"ns/a", "ns/b"}
            await h.eventually(both, timeout=10)
            leases.serving({"ns/a", "ns/b"})
            leases.want({"ns/a": "uid-3"})  # b deleted, a deleted and created again
            assert leases.held() == set()  # neither is served any more, until a's new Lease is taken
            leases.serving(set())

            async def renewed() -> None:
                assert leases.held() == {"ns/a"}
                items = (await client.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
                                          labelSelector=f"dr.standby.dev/lease-of={component}"))["items"]
                names = sorted(i["metadata"]["name"] for i in items if i["metadata"]["labels"][
                    "dr.standby.dev/lease-role"] == "plan")
                assert names == [f"standby-{component}-uid-3"]
            await h.eventually(renewed, timeout=10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await leases.close()


@pytest.fixture(scope="module")
def slowed(destination: LocalCluster, env_root: Path) -> Iterator[tuple[LocalToxiproxy, str]]:
    """A real Toxiproxy in front of the API server: (the proxy, its server URL)."""
    proxy = LocalToxiproxy(env_root / "toxiproxy-leases").start()
    try:
        port = proxy.proxy("leases", destination.server.removeprefix("https://"))
        yield proxy, f"https://127.0.0.1:{port}"
    finally:
        proxy.stop()


@contextlib.contextmanager
def slow(proxy: LocalToxiproxy, seconds: float) -> Iterator[None]:
    """Every answer through the proxy ``seconds`` late: longer than the renew deadline."""
    proxy.add_toxic("leases", "slow", "latency", latency=int(seconds * 1000))
    try:
        yield
    finally:
        proxy.remove_toxic("leases", "slow")


async def test_a_late_renewal_pauses_the_plans_and_the_next_one_resumes_them(
        slowed: tuple[LocalToxiproxy, str], destination: LocalCluster) -> None:
    proxy, server = slowed
    async with replicas(destination, "paused") as group, \
            KubeClient(dataclasses.replace(group.client.creds, server=server)) as through:
        a = group.start("replica-a", through)
        await spread_becomes([a], [30])
        with slow(proxy, FAST["renew_deadline_seconds"] + 0.5):
            async def paused() -> None:
                assert a.leases.held() == frozenset()  # nothing may be written
                assert a.leases.assigned() == frozenset(PLANS)  # but nothing is stopped either
            await h.eventually(paused, timeout=FAST["renew_deadline_seconds"] + 2, interval=0.05)
            waiting = asyncio.create_task(a.leases.until_held("team-0/plan-0"))  # as the paused work does
            await asyncio.sleep(0.2)
            assert not waiting.done()
        await spread_becomes([a], [30], timeout=10)
        await asyncio.wait_for(waiting, timeout=1)
        assert a.work.stops == 0 and a.work.running == set(PLANS)


async def test_a_paused_plan_taken_over_by_another_replica_is_stopped_and_never_held_twice(
        slowed: tuple[LocalToxiproxy, str], destination: LocalCluster) -> None:
    proxy, server = slowed
    async with replicas(destination, "overtaken") as group, \
            KubeClient(dataclasses.replace(group.client.creds, server=server)) as through:
        a, b = group.start("replica-a", through), group.start("replica-b")

        async def even() -> None:
            assert spread([a, b]) == [15, 15]
            await exclusive(group, [a, b])
        await h.eventually(even, timeout=15)
        a_plans = a.leases.held()
        twice: set[str] = set()

        async def watch_for_twice() -> None:
            while True:
                twice.update(p for p in PLANS if a.leases.holds(p) and b.leases.holds(p))
                await asyncio.sleep(0.01)
        watcher = asyncio.create_task(watch_for_twice())
        try:
            with slow(proxy, FAST["renew_deadline_seconds"] + 0.5):
                async def taken_over() -> None:
                    assert b.leases.held() == frozenset(PLANS)
                    assert not a_plans & a.leases.assigned()  # seen late, but seen: a's work stopped
                await h.eventually(taken_over, timeout=20, interval=0.05)

                # Stopped by its supervisor's next pass: a runs nothing while b holds every plan. At
                # least its own plans were stopped; over a slow link it may also have taken one of b's
                # for a moment (an answer in time), paused it and stopped it when b took it back.
                async def stopped() -> None:
                    assert not a.work.running and a.work.stops >= len(a_plans)
                await h.eventually(stopped, timeout=5, interval=0.05)
            await h.eventually(even, timeout=20)  # a is back: b gives it its share
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        assert not twice
