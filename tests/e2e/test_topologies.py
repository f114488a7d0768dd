"""Three clusters, failback, fromOriginal and the delete breaker, end to end on real clusters."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from schemas import API_VERSION, subjects
from schemas import annotations as ann
from services.common import streams
from services.common.kube import KubeClient
from services.devenv import bootstrap
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from services.syncer.settings import DeleteSettings
from services.syncer.supervisor import Supervisor as SyncSupervisor
from services.watcher.supervisor import Supervisor as WatchSupervisor
from tests.e2e.conftest import Pipeline, syncer_settings, watcher_settings
from tests.e2e.test_operate import standby
from tests.e2e.test_recovery import execution_plan, finished, recovery_process, run_job, start_job
from tests.support import env as h
from tests.support.mirrors import HUB, hub_and_leaf

DEPLOY = "/apis/apps/v1/namespaces/{ns}/deployments/{name}"


async def deploy(client: KubeClient, ns: str, name: str, replicas: int) -> None:
    await client.apply(DEPLOY.format(ns=ns, name=name), {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": f"{name}:1"}]}}}}, field_manager="test")


@pytest.fixture
async def management(env_root: Path, source: LocalCluster, destination: LocalCluster) -> AsyncIterator[LocalCluster]:
    cluster = LocalCluster("management", env_root).start()
    bootstrap.install_crds(cluster)
    bootstrap.ensure_namespace(cluster, bootstrap.SYSTEM_NAMESPACE)
    bootstrap.install_stream_keys([cluster], bootstrap.stream_keyring(destination))  # recovery reads the stream too
    reader = source.mint_credentials("standby-reader", namespace=bootstrap.SYSTEM_NAMESPACE,
                                     rules=bootstrap.READ_ONLY_RULES, cluster_scoped=True)
    bootstrap.register_cluster(cluster, "source", reader)
    bootstrap.register_cluster(cluster, "destination", destination.kubeconfig)
    try:
        yield cluster
    finally:
        cluster.stop()


async def run_sync_side(own: KubeClient, nats_server: LocalNats, **syncer: Any) -> tuple[list[asyncio.Task[None]], Any]:
    wnc = await streams.connect(h.nats_settings(nats_server), name="tri-watcher")
    snc = await streams.connect(h.nats_settings(nats_server), name="tri-syncer")
    watcher = WatchSupervisor(own, wnc, watcher_settings(nats_server))
    sync = SyncSupervisor(own, snc, syncer_settings(nats_server, **syncer))
    tasks = [asyncio.create_task(watcher.run(), name="watcher"), asyncio.create_task(sync.run(), name="syncer")]

    async def stop() -> None:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await wnc.close()
        await snc.close()
    return tasks, stop


def deployments_plan(name: str, namespace: str) -> dict[str, Any]:
    """A plan protecting the Deployments of one namespace."""
    return h.plan_body(name, [{"group": "apps", "version": "v1", "resource": "deployments",
                               "filters": {"namespaces": [namespace]}}], forceNamespaceCreation=True)


async def test_three_clusters_failover_with_management_gone(
        source: LocalCluster, registered: LocalCluster, management: LocalCluster, nats_server: LocalNats) -> None:
    async with KubeClient.from_kubeconfig(source.kubeconfig) as src, \
            KubeClient.from_kubeconfig(registered.kubeconfig) as dst, \
            KubeClient.from_kubeconfig(management.kubeconfig) as mgmt:
        await h.namespace(src, "tri")
        await deploy(src, "tri", "web", 3)
        body = deployments_plan("tri", "tri")
        body["spec"]["destinationClusterRef"] = {"name": "destination", "namespace": h.SYSTEM}
        await h.apply_plan(mgmt, body)
        _, stop = await run_sync_side(mgmt, nats_server)
        try:
            async def copied() -> None:
                web = await dst.get(DEPLOY.format(ns="tri", name="web"))
                assert web["spec"]["replicas"] == 0
            await h.eventually(copied, timeout=30)
            # The plan and its status live in the management cluster; the destination has no plan.
            async def plan_status() -> None:
                plan = await mgmt.get(f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/recoveryplans/tri")
                assert plan["status"]["objectsInSync"] >= 1
            await h.eventually(plan_status, timeout=15)
        finally:
            await stop()
        management.stop()  # the management cluster is gone, with the plans in it

        pipe = Pipeline(src, dst, None, None, None)  # type: ignore[arg-type]
        await execution_plan(pipe, "tri", "tri")
        status = await run_job(pipe, registered, None, "tri", "recovery-tri")
        assert status["phase"] == "Completed", status
        assert (await dst.get(DEPLOY.format(ns="tri", name="web")))["spec"]["replicas"] == 3


async def test_failback_brings_the_repaired_source_back_in_step(
        source: LocalCluster, registered: LocalCluster, nats_server: LocalNats, env_root: Path) -> None:
    """The procedure of docs/operations.md: after a failover, a plan in the reverse direction."""
    async with KubeClient.from_kubeconfig(source.kubeconfig) as src, \
            KubeClient.from_kubeconfig(registered.kubeconfig) as dst:
        await dst.request("DELETE", f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/recoveryplans")
        await h.namespace(src, "fb")
        await deploy(src, "fb", "web", 3)
        await h.apply_plan(dst, deployments_plan("fb", "fb"))
        _, stop = await run_sync_side(dst, nats_server)
        try:
            await h.eventually(lambda: _replicas(dst, "fb", "web", 0), timeout=30)
        finally:
            await stop()
        pipe = Pipeline(src, dst, None, None, None)  # type: ignore[arg-type]
        await execution_plan(pipe, "fb", "fb", wait=False)
        assert (await run_job(pipe, registered, None, "fb", "recovery-fb"))["phase"] == "Completed"
        # Life goes on in the new primary.
        await dst.request("PATCH", DEPLOY.format(ns="fb", name="web"), body={"spec": {"replicas": 4}},
                          content_type="application/merge-patch+json")

        # Failback, step 1: the repaired old source becomes the stand-by of a reverse plan.
        bootstrap.register_cluster(registered, "old-primary", source.kubeconfig)
        reverse = deployments_plan("fb-back", "fb")
        reverse["spec"]["sourceClusterRef"] = {"name": "destination", "namespace": h.SYSTEM}
        reverse["spec"]["destinationClusterRef"] = {"name": "old-primary", "namespace": h.SYSTEM}
        await h.apply_plan(dst, reverse)
        _, stop = await run_sync_side(dst, nats_server)
        try:
            async def back_in_step() -> None:
                web = await src.get(DEPLOY.format(ns="fb", name="web"))
                assert web["spec"]["replicas"] == 0
                assert json.loads(web["metadata"]["annotations"][ann.INVERSE])[0]["value"] == 4
            await h.eventually(back_in_step, timeout=30)
        finally:
            await stop()
        # Step 2: fail back by a job in the old source (CRDs and recovery there).
        bootstrap.install_crds(source)
        bootstrap.ensure_namespace(source, bootstrap.SYSTEM_NAMESPACE)
        back = Pipeline(dst, src, None, None, None)  # type: ignore[arg-type]
        await execution_plan(back, "fb-back", "fb-back", wait=False)
        assert (await run_job(back, source, None, "fb-back", "recovery-fb-back"))["phase"] == "Completed"
        assert (await src.get(DEPLOY.format(ns="fb", name="web")))["spec"]["replicas"] == 4


async def _replicas(client: KubeClient, ns: str, name: str, want: int) -> None:
    assert (await client.get(DEPLOY.format(ns=ns, name=name)))["spec"]["replicas"] == want


async def test_from_original_restores_from_the_stream_or_says_why(pipe: Pipeline, registered: LocalCluster,
                                                                 nats_server: LocalNats) -> None:
    await h.namespace(pipe.src, "orig")
    await deploy(pipe.src, "orig", "web", 3)
    await pipe.src.apply("/api/v1/namespaces/orig/secrets/creds", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "orig", "labels": {"a": "b"}},
        "stringData": {"token": "original-token"}}, field_manager="test")
    from_original = {
        "transformation": {"patch": [{"op": "add", "path": "/metadata/labels/standby", "value": "copy"}]},
        "recoveryProcess": {"fromOriginal": {"enabled": True},
                            "fromPatch": [{"op": "add", "path": "/metadata/labels/recovered", "value": "yes"}]}}
    await h.apply_plan(pipe.dst, h.plan_body("orig", [
        {"group": "apps", "version": "v1", "resource": "deployments", "filters": {"namespaces": ["orig"]},
         **from_original},
        # a Secret's original is sealed in the stream: recovery opens it with the stand-by's keys
        {"version": "v1", "resource": "secrets", "filters": {"namespaces": ["orig"]}, **from_original}],
        forceNamespaceCreation=True))
    await h.eventually(lambda: _replicas(pipe.dst, "orig", "web", 0), timeout=30)
    await h.eventually(lambda: pipe.dst.get("/api/v1/namespaces/orig/secrets/creds"), timeout=30)
    await execution_plan(pipe, "orig", "orig", wait=False)
    # Without the stream: a clear reason per object, nothing half-done.
    status = await run_job(pipe, registered, None, "orig", "recovery-no-stream", dry_run=True)
    assert status["phase"] == "PartiallyFailed"  # the namespace it created activates; the Deployment cannot
    web = {o["ref"]: o for o in status["objects"]}["deployments.apps/orig/web"]
    assert web["outcome"] == "Failed" and "needs the stream" in web["reason"]
    status = await run_job(pipe, registered, nats_server, "orig", "recovery-stream")
    assert status["phase"] == "Completed", status
    web = await pipe.dst.get(DEPLOY.format(ns="orig", name="web"))
    assert web["spec"]["replicas"] == 3
    assert web["metadata"]["labels"].get("recovered") == "yes"
    assert "standby" not in web["metadata"]["labels"]
    creds = await pipe.dst.get("/api/v1/namespaces/orig/secrets/creds")
    assert base64.b64decode(creds["data"]["token"]) == b"original-token"
    assert creds["metadata"]["labels"].get("recovered") == "yes" and "standby" not in creds["metadata"]["labels"]
    for restored in (web, creds):  # handed over as every activated object: the syncer owns none of its fields
        assert ann.FIELD_MANAGER not in {m.get("manager") for m in restored["metadata"].get("managedFields") or []}


async def test_delete_breaker_holds_mass_deletion_until_an_operator_resets_it(
        source: LocalCluster, registered: LocalCluster, nats_server: LocalNats) -> None:
    """Deleting 30 of 40 objects in the source deletes at most the allowance in the stand-by; the
    rest wait, past the breaker's window and across a syncer restart, until the plan is annotated."""
    plan_path = f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/recoveryplans/breaker"
    deletes = DeleteSettings(breaker_share=0.25, breaker_min_deletes=5, breaker_window_seconds=4)
    async with KubeClient.from_kubeconfig(source.kubeconfig) as src, \
            KubeClient.from_kubeconfig(registered.kubeconfig) as dst:
        await dst.request("DELETE", f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/recoveryplans")
        await h.namespace(src, "breaker")
        for i in range(40):
            await h.configmap(src, "breaker", f"c{i}")
        await h.apply_plan(dst, h.plan_body("breaker", [{"version": "v1", "resource": "configmaps",
                                                         "filters": {"namespaces": ["breaker"]}}],
                                            forceNamespaceCreation=True))

        async def copies() -> int:
            items = (await dst.get("/api/v1/namespaces/breaker/configmaps"))["items"]
            return len([i for i in items if i["metadata"].get("labels", {}).get(ann.MANAGED)])

        async def breaker() -> tuple[str, str, bool]:
            status = (await dst.get(plan_path))["status"]
            degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
            return degraded["status"], degraded["reason"], status.get("deleteBreaker", {}).get("open", False)

        _, stop = await run_sync_side(dst, nats_server, deletes=deletes)
        try:
            async def copied() -> None:
                assert await copies() == 40
            await h.eventually(copied, timeout=30)
            for i in range(30):
                await src.request("DELETE", f"/api/v1/namespaces/breaker/configmaps/c{i}")

            async def tripped() -> None:
                assert await breaker() == ("True", "DeleteBreakerOpen", True)
            await h.eventually(tripped, timeout=30)
            held = await copies()
            assert held >= 40 - 10, "at most the breaker's allowance (a quarter of 40) was deleted"
            await asyncio.sleep(3 * deletes.breaker_window_seconds)
            assert await copies() == held, "the breaker stays open past its window"
        finally:
            await stop()
        _, stop = await run_sync_side(dst, nats_server, deletes=deletes)  # a restarted syncer
        try:
            await asyncio.sleep(3)
            assert await copies() == held and await breaker() == ("True", "DeleteBreakerOpen", True)
            await dst.request("PATCH", plan_path, body={"metadata": {"annotations": {ann.DELETE_BREAKER_RESET: "1"}}},
                              content_type="application/merge-patch+json")

            async def released() -> None:
                assert await copies() == 10
                assert await breaker() == ("False", "Healthy", False)
            await h.eventually(released, timeout=30)
        finally:
            await stop()


async def mirror_lag(hub: JetStreamContext, leaf: JetStreamContext, stream: str, change: Callable[[], Awaitable[None]],
                     *, timeout: float = 30) -> float:
    """Seconds from a change's message stored in the hub's stream to the same in the stand-by's
    mirror (both polled every 5 ms)."""
    before = (await hub.stream_info(stream)).state.last_seq
    await change()
    deadline = time.monotonic() + timeout
    stored = None
    while time.monotonic() < deadline:
        if stored is None and (await hub.stream_info(stream)).state.last_seq > before:
            stored = time.monotonic()
            target = (await hub.stream_info(stream)).state.last_seq
        if stored is not None and (await leaf.stream_info(stream)).state.last_seq >= target:
            return time.monotonic() - stored
        await asyncio.sleep(0.005)
    raise AssertionError(f"the change did not reach the {'mirror' if stored else 'stream'} within {timeout}s")


async def test_the_stand_by_keeps_its_own_record_and_rebuilds_and_restores_originals_from_it(
        source: LocalCluster, registered: LocalCluster, management: LocalCluster, tmp_path: Path) -> None:
    """Three clusters; the stand-by's NATS joined to the management's as a leaf node, recovery
    keeping the mirrors. The management cluster and its NATS gone: a lost copy is rebuilt from the
    mirror (the plan as the stream recorded it), and a failover restores originals from it."""
    with hub_and_leaf(tmp_path) as (hub, leaf):
        recovery = recovery_process(registered, leaf, "recovery-mirror", MIRROR__DOMAIN=HUB,
                                    MIRROR__INTERVAL_SECONDS="0.5").start()
        leaf_nc: Client | None = None
        async with KubeClient.from_kubeconfig(source.kubeconfig) as src, \
                KubeClient.from_kubeconfig(registered.kubeconfig) as dst, \
                KubeClient.from_kubeconfig(management.kubeconfig) as mgmt:
            try:
                await h.namespace(src, "mir")
                await deploy(src, "mir", "web", 3)
                body = deployments_plan("mir", "mir")
                body["spec"]["destinationClusterRef"] = {"name": "destination", "namespace": h.SYSTEM}
                body["spec"]["resources"][0] |= {"recoveryProcess": {"fromOriginal": {"enabled": True}, "fromPatch": [
                    {"op": "add", "path": "/metadata/labels/recovered", "value": "from-the-mirror"}]}}
                await h.apply_plan(mgmt, body)
                hub_nc = await streams.connect(h.nats_settings(hub), name="test-hub")
                leaf_nc = await streams.connect(h.nats_settings(leaf), name="test-leaf")
                _, stop = await run_sync_side(mgmt, hub)
                stream = subjects.stream_name(h.SYSTEM, "mir")
                try:
                    await h.eventually(lambda: _replicas(dst, "mir", "web", 0), timeout=30)
                    await h.eventually(lambda: leaf_nc.jetstream().stream_info(stream), timeout=30)
                    lags = []
                    for i in range(10):
                        lags.append(await mirror_lag(hub_nc.jetstream(), leaf_nc.jetstream(), stream,
                                                     lambda i=i: deploy(src, "mir", "web", 4 + i % 2)))
                    lags.sort()
                    print(f"mirror lag (hub stored -> mirror stored), 10 changes: p50 {lags[4] * 1000:.0f} ms, "
                          f"max {lags[-1] * 1000:.0f} ms")
                    assert lags[-1] < 5
                    await deploy(src, "mir", "web", 3)
                    rv = (await src.get(DEPLOY.format(ns="mir", name="web")))["metadata"]["resourceVersion"]

                    async def mirrored() -> None:  # web's state of then (or a later one, of its status), mirrored
                        last = await streams.last_states(leaf_nc.jetstream(), stream,
                                                         subjects.plan_filter("standby", h.SYSTEM, "mir"))
                        (state,) = [s for subject, s in last.items() if subject.endswith(".deployments.mir.web")]
                        assert int(state.resource_version) >= int(rv)
                    await h.eventually(mirrored, timeout=30)
                finally:
                    await stop()
                    await hub_nc.close()
                management.stop()
                hub.stop()  # the management region is gone, with its broker

                # A lost copy, rebuilt in the stand-by from its own record.
                await dst.request("DELETE", DEPLOY.format(ns="mir", name="web"))
                await h.absent(dst, DEPLOY.format(ns="mir", name="web"))
                ran = await standby(registered, "rebuild", "mir", "--direct", "--nats-url", leaf.url,
                                    env={"STANDBY_NATS_USER": leaf.user, "STANDBY_NATS_PASSWORD": leaf.password})
                assert ran.code == 0, ran
                assert "the plan as its stream recorded it" in ran.out + ran.err
                await _replicas(dst, "mir", "web", 0)

                # A failover restores the original from the mirror (fromOriginal).
                pipe = Pipeline(src, dst, None, None, None)  # type: ignore[arg-type]
                await execution_plan(pipe, "mir", "mir", wait=False)
                status = await finished(pipe, await start_job(pipe, "mir"))
                assert status["phase"] == "Completed", status
                web = await dst.get(DEPLOY.format(ns="mir", name="web"))
                assert web["spec"]["replicas"] == 3 and web["metadata"]["labels"]["recovered"] == "from-the-mirror"
            finally:
                recovery.stop()
                if leaf_nc is not None:
                    await leaf_nc.close()
