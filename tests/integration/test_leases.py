"""Replicas sharing plans through one Lease per plan (services.common.leasing), on a real API server:
the plans spread evenly and each is held by exactly one replica; a replica that joins gets its share
from the others (given back only once their work stopped); a replica that dies has its plans taken
over within the Lease duration of its last renewal, after it stopped counting them as its own; one
that stops cleanly hands them over at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.common.kube import KubeClient
from services.common.leasing import PlanLeases
from services.common.settings import LeaseSettings
from services.devenv.clusters import LocalCluster
from tests.support import env as h

FAST = {"duration_seconds": 3, "renew_deadline_seconds": 2.0, "retry_seconds": 0.5}
PLANS = {f"team-{i // 10}/plan-{i}": str(uuid.uuid4()) for i in range(30)}


@dataclass
class Replica:
    leases: PlanLeases
    task: asyncio.Task[None]
    supervisor: asyncio.Task[None]

    def kill(self) -> None:
        """As kill -9: nothing is given back."""
        self.task.cancel()
        self.supervisor.cancel()


async def supervise(leases: PlanLeases) -> None:
    """What a supervisor does with its Leases: says which plans exist, and runs (here: claims to
    run) exactly the ones it holds, a little after it learns of a change."""
    while True:
        leases.want(PLANS)
        await asyncio.sleep(0.05)
        leases.serving(leases.held())
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

    def start(self, identity: str) -> Replica:
        leases = PlanLeases(self.client, self.namespace, self.component, LeaseSettings(identity=identity, **FAST))
        replica = Replica(leases, asyncio.create_task(leases.run()), asyncio.create_task(supervise(leases)))
        self.started.append(replica)
        return replica


@contextlib.asynccontextmanager
async def replicas(client: KubeClient, namespace: str, component: str) -> AsyncIterator[Replicas]:
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


async def exclusive(client: KubeClient, namespace: str, component: str, alive: list[Replica]) -> None:
    """Every plan held by exactly one replica, in the Leases and in what the replicas think."""
    held = [r.leases.held() for r in alive]
    assert sum(len(s) for s in held) == len(PLANS), [len(s) for s in held]
    assert set().union(*held) == set(PLANS)
    leases = (await client.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
                               labelSelector=f"dr.standby.dev/lease-of={component}"))["items"]
    holders = {lease["metadata"]["annotations"]["dr.standby.dev/plan"]: lease["spec"]["holderIdentity"]
               for lease in leases if lease["metadata"]["labels"]["dr.standby.dev/lease-role"] == "plan"}
    for r, mine in zip(alive, held, strict=True):
        assert {plan for plan, holder in holders.items() if holder == r.leases.identity} == set(mine)


async def test_replicas_share_the_plans_evenly_and_take_over_a_dead_ones(destination: LocalCluster) -> None:
    namespace, component = f"leases-{uuid.uuid4().hex[:6]}", "replicated"
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as client, \
            replicas(client, namespace, component) as group:
        await h.namespace(client, namespace)
        start = group.start
        a = start("replica-a")

        async def alone() -> None:
            assert spread([a]) == [30]
        await h.eventually(alone, timeout=10)

        b, c = start("replica-b"), start("replica-c")  # they join: a gives back 20, after stopping them

        async def even() -> None:
            assert spread([a, b, c]) == [10, 10, 10]
            await exclusive(client, namespace, component, [a, b, c])
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
            await exclusive(client, namespace, component, [a, b])
        await h.eventually(taken_over, timeout=15, interval=0.05)
        took = time.monotonic() - killed
        # The lease duration from the last renewal, which came at most a retry before the kill.
        assert took <= FAST["duration_seconds"] + 1.0, took

        a.kill()  # a clean stop: its work and its keeper stop, then it gives its Leases back
        await asyncio.gather(a.task, a.supervisor, return_exceptions=True)
        await a.leases.release_all()
        stopped = time.monotonic()

        async def handed_over() -> None:
            assert spread([b]) == [30]
        await h.eventually(handed_over, timeout=10, interval=0.05)
        assert time.monotonic() - stopped < FAST["duration_seconds"] / 2


async def test_a_replica_restarted_under_its_name_serves_its_plans_again_at_once(destination: LocalCluster) -> None:
    """A pod's container restarted in place keeps the pod's name: its Leases are its own."""
    namespace, component = f"leases-{uuid.uuid4().hex[:6]}", "restarted"
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as client, \
            replicas(client, namespace, component) as group:
        await h.namespace(client, namespace)
        start = group.start
        first = start("pod-0")

        async def all_held() -> None:
            assert spread([first]) == [30]
        await h.eventually(all_held, timeout=10)
        first.kill()
        again = start("pod-0")
        restarted = time.monotonic()

        async def held_again() -> None:
            assert spread([again]) == [30]
        await h.eventually(held_again, timeout=10, interval=0.05)
        assert time.monotonic() - restarted < FAST["duration_seconds"] / 2


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
