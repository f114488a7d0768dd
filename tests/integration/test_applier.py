"""The syncer's applier against a real destination API server: what a (re)started syncer knows of
the copies already there."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest

from schemas import annotations as ann
from schemas.envelope import Envelope, EventType, ObjectReference
from services.common import fencing, plans
from services.common.fencing import FenceCache
from services.common.kube import ApiError, KubeClient
from services.devenv.clusters import LocalCluster
from services.syncer.applying import PlanApplier
from services.syncer.outcomes import TemporaryError
from services.syncer.settings import SyncerSettings
from tests.support import env as h

NS = "applier-warm"
PLAN = plans.parse_plan(h.plan_body("applier", [{"version": "v1", "resource": "configmaps",
                                                  "filters": {"namespaces": [NS]}}], forceNamespaceCreation=True))


def change(name: str, rv: str, uid: str = "uid-1", value: str = "1") -> Envelope:
    return Envelope(type=EventType.UPSERT, ref=ObjectReference(version="v1", resource="configmaps", kind="ConfigMap",
                                                               namespace=NS, name=name),
                    source_uid=uid, source_resource_version=rv, observed_at=time.time(), plan_namespace=h.SYSTEM,
                    plan_name="applier", body={"apiVersion": "v1", "kind": "ConfigMap",
                                               "metadata": {"name": name, "namespace": NS}, "data": {"v": value}})


@pytest.fixture
async def kube(registered: LocalCluster) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig(registered.kubeconfig) as client:
        yield client
        for name in ("a", "b", "not-a-copy"):
            await h.delete(client, f"/api/v1/namespaces/{NS}/configmaps/{name}")


async def applier(kube: KubeClient, *, clock: Callable[[], float] = time.monotonic) -> PlanApplier:
    fences = FenceCache(kube, h.SYSTEM, clock=clock)
    await fences.refresh()
    return PlanApplier(PLAN, kube, fences, SyncerSettings())


async def test_a_restarted_applier_knows_each_copy_from_one_list(kube: KubeClient) -> None:
    first = await applier(kube)
    await first.warm()
    assert (await first.handle(change("a", "10"), 1)).outcome == "applied"
    assert (await first.handle(change("b", "20", uid="uid-2"), 2)).outcome == "applied"
    await h.configmap(kube, NS, "not-a-copy")  # made by someone else: not Standby's

    restarted = await applier(kube)
    await restarted.warm()

    assert {key.name: (c.resource_version, c.source_uid) for key, c in restarted.progress.copies.items()} == {
        "a": (10, "uid-1"), "b": (20, "uid-2")}
    # An older version replayed from the stream is recognised without reading the copy again.
    assert (await restarted.handle(change("a", "9", value="old"), 3)).outcome == "skipped_stale"
    copy = await kube.get(f"/api/v1/namespaces/{NS}/configmaps/a")
    assert copy["data"] == {"v": "1"}


async def test_nothing_is_written_while_the_fences_are_not_known(kube: KubeClient) -> None:
    """Fail closed: a view of the fences older than the bound holds every write back."""
    clock = [0.0]
    fences = FenceCache(kube, h.SYSTEM, max_age_seconds=0.75, clock=lambda: clock[0])
    stale = PlanApplier(PLAN, kube, fences, SyncerSettings())
    with pytest.raises(TemporaryError, match="fences"):  # never read
        await stale.handle(change("a", "10"), 1)
    await fences.refresh()
    clock[0] = 0.8  # read 0.8 s ago: no longer fresh
    with pytest.raises(TemporaryError, match="fences"):
        await stale.handle(change("a", "10"), 1)
    with pytest.raises(ApiError) as absent:
        await kube.get(f"/api/v1/namespaces/{NS}/configmaps/a")
    assert absent.value.not_found
    clock[0] = 0.5
    assert (await stale.handle(change("a", "10"), 1)).outcome == "applied"


async def test_a_write_the_api_server_refuses_for_a_fence_the_view_has_not_shown_is_skipped(
        kube: KubeClient) -> None:
    """The fence policy refuses a copy of a fenced plan before the syncer's own view of the fences
    shows the fence: the message is skipped as fenced, not retried or dead-lettered."""
    # Its view: read before the fence and, by its clock, still within its bound however long the
    # API server takes to enforce the fence (on the real clock it would go stale and hold the write).
    first = await applier(kube, clock=lambda: 0.0)
    assert (await first.handle(change("a", "10"), 1)).outcome == "applied"
    fence = f"/api/v1/namespaces/{h.SYSTEM}/configmaps/{ann.fence_name(h.SYSTEM, 'applier')}"
    assert await fencing.write(kube, h.SYSTEM, PLAN.key, epoch=1, job="j")  # the fence and its policy binding
    try:
        assert await fencing.enforced(kube, h.SYSTEM, {PLAN.key}, timeout=5)
        assert (await first.handle(change("a", "11", value="late"), 2)).outcome == "skipped_fenced"
        assert (await kube.get(f"/api/v1/namespaces/{NS}/configmaps/a"))["data"] == {"v": "1"}
    finally:
        await kube.request("DELETE", fence, parse=False)
        await kube.request("DELETE", fencing.binding_path(*PLAN.key.split("/")), parse=False)

        async def lifted() -> None:  # the fixture deletes the copies
            assert not await fencing.enforced(kube, h.SYSTEM, {PLAN.key}, timeout=0)
        await h.eventually(lifted, timeout=10)
