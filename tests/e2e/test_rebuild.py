"""`standby rebuild` and restores, against the running pipeline on the session's real clusters: a bad
change replicated to the stand-by is undone there by a rebuild as of the moment before it (dry run
first; the plan paused and resumed), the same moment is rebuilt into a new empty cluster, and the
source itself is restored; refused before anything is written when the moment or the target is
wrong."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schemas import annotations as ann
from schemas.rebuilds import Selection
from services.common.history import rfc3339
from services.common.kube import KubeClient
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from services.operate import rebuild
from tests.e2e.conftest import Pipeline, empty_cluster, pipeline
from tests.e2e.test_operate import broker_credentials, standby
from tests.support import env as h

NS = "rb-app"


@pytest.fixture
async def empty(env_root: Path, registered: LocalCluster) -> AsyncIterator[LocalCluster]:
    """A new, empty cluster, registered in the stand-by as ManagedCluster "empty"."""
    with empty_cluster(env_root, registered, "empty") as cluster:
        yield cluster


def cm(name: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS,
                                                                  "labels": {"app": "shop"}}, "data": {"k": value}}


async def configmaps(kube: KubeClient) -> dict[str, dict[str, str]]:
    items = (await kube.get(f"/api/v1/namespaces/{NS}/configmaps", labelSelector="app=shop"))["items"]
    return {i["metadata"]["name"]: i.get("data") or {} for i in items}


async def copies_are(pipe: Pipeline, expected: dict[str, dict[str, str]]) -> None:
    assert await configmaps(pipe.dst) == expected


async def test_a_bad_change_is_undone_in_the_stand_by_in_a_new_cluster_and_in_the_source(
        pipe: Pipeline, registered: LocalCluster, source: LocalCluster, nats_server: LocalNats,
        empty: LocalCluster) -> None:
    core = f"/api/v1/namespaces/{NS}"
    secret_path = await broker_credentials(pipe, nats_server)
    await h.namespace(pipe.src, NS)
    await h.apply_plan(pipe.dst, h.plan_body(NS, [
        {"version": "v1", "resource": r, "filters": {"namespaces": [NS]}} for r in ("configmaps", "secrets")] + [
        {"group": "apps", "version": "v1", "resource": "deployments", "filters": {"namespaces": [NS]}}],
        forceNamespaceCreation=True))
    url = ["--nats-url", nats_server.url]
    try:
        for name in ("a", "b"):
            await pipe.src.apply(f"{core}/configmaps/{name}", cm(name, "good"), field_manager="test")
        await pipe.src.apply(f"/apis/apps/v1/namespaces/{NS}/deployments/web", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": "registry.example/web:1"}]}}}},
            field_manager="test")
        good = {"a": {"k": "good"}, "b": {"k": "good"}}
        await h.eventually(lambda: copies_are(pipe, good), timeout=30)

        # Copies deleted and edited by hand in the stand-by: a rebuild as of now puts them back, and
        # the plan, paused meanwhile, runs again.
        await pipe.dst.request("DELETE", f"{core}/configmaps/b")
        await pipe.dst.request("PATCH", f"{core}/configmaps/a", body={"data": {"k": "by hand"}},
                               content_type="application/merge-patch+json", params={"fieldManager": "someone"})
        ran = await standby(registered, "rebuild", "--direct", NS, "--nats-url", nats_server.url)
        assert ran.code == 0 and "resumed" in ran.err, (ran.out, ran.err)
        assert await configmaps(pipe.dst) == good
        plan = await pipe.dst.get(f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/recoveryplans/{NS}")
        assert plan["spec"]["suspend"] is False
        await asyncio.sleep(0.2)
        before = time.time()  # the moment to go back to
        await asyncio.sleep(0.2)

        # The bad change: one object edited, one deleted, one created. The stand-by follows.
        await pipe.src.apply(f"{core}/configmaps/a", cm("a", "bad"), field_manager="test")
        await pipe.src.request("DELETE", f"{core}/configmaps/b")
        await pipe.src.apply(f"{core}/configmaps/c", cm("c", "bad"), field_manager="test")
        await h.eventually(lambda: copies_are(pipe, {"a": {"k": "bad"}, "c": {"k": "bad"}}), timeout=30)

        at = ["--at", rfc3339(before)]
        ran = await standby(registered, "rebuild", "--direct", NS, *at, "--prune", "--dry-run", *url)
        assert ran.code == 0, (ran.out, ran.err)
        rows = {tuple(line.split()[:2]) for line in ran.out.splitlines()[1:]}
        assert rows == {("update", f"configmaps.core/{NS}/a"), ("create", f"configmaps.core/{NS}/b"),
                        ("delete", f"configmaps.core/{NS}/c")}, ran.out
        assert "earliest available" in ran.err, ran.err
        assert await configmaps(pipe.dst) == {"a": {"k": "bad"}, "c": {"k": "bad"}}  # a dry run writes nothing

        # The live stand-by, as of the moment before: paused, rebuilt, and left paused (resumed, the
        # syncer would bring the bad state back): ready to fail over to the state before the change.
        ran = await standby(registered, "rebuild", "--direct", NS, *at, "--prune", *url)
        assert ran.code == 0, (ran.out, ran.err)
        assert "paused" in ran.err and "left suspended" in ran.err, ran.err
        assert await configmaps(pipe.dst) == good
        copy = await pipe.dst.get(f"{core}/configmaps/b")
        assert copy["metadata"]["labels"][ann.MANAGED] == ann.MANAGED_VALUE  # a copy, as the syncer writes it
        deployment = await pipe.dst.get(f"/apis/apps/v1/namespaces/{NS}/deployments/web")
        assert deployment["spec"]["replicas"] == 0  # deactivated
        plan = await pipe.dst.get(f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/recoveryplans/{NS}")
        assert plan["spec"]["suspend"] is True

        # The same moment into a new, empty cluster: every object, deactivated, namespaces created.
        ran = await standby(registered, "rebuild", "--direct", NS, *at, "--target-cluster", "empty", *url)
        assert ran.code == 0, (ran.out, ran.err)
        async with KubeClient.from_kubeconfig(empty.kubeconfig) as fresh:
            assert await configmaps(fresh) == good
            web = await fresh.get(f"/apis/apps/v1/namespaces/{NS}/deployments/web")
            assert web["spec"]["replicas"] == 0 and web["metadata"]["labels"][ann.MANAGED] == ann.MANAGED_VALUE
        ran = await standby(registered, "rebuild", "--direct", NS, *at, "--target-cluster", "empty", "--dry-run", *url)
        assert (ran.code, ran.out) == (0, "Nothing to change: the target holds the rebuilt state.\n"), ran.out

        # Restore into the source (the objects as the source had them; the caller's own write
        # credentials): what it would write is printed first, then asked; no answer is no.
        writer = ["--source-kubeconfig", str(source.kubeconfig)]
        ran = await standby(registered, "restore", NS, *at, *writer, "--resources", "configmaps", *url)
        assert ran.code == 1 and "nothing written" in ran.err and "[y/N]" in ran.err, (ran.out, ran.err)
        assert {tuple(line.split()[:2]) for line in ran.out.splitlines()[1:]} == {
            ("update", f"configmaps.core/{NS}/a"), ("create", f"configmaps.core/{NS}/b")}, ran.out
        assert (await pipe.src.get(f"{core}/configmaps/a"))["data"] == {"k": "bad"}
        ran = await standby(registered, "restore", NS, *at, *writer, "--resources", "configmaps", *url, answer="y\n")
        assert ran.code == 0 and "restored: 1 created, 1 updated, 0 failed" in ran.err, (ran.out, ran.err)
        restored = await pipe.src.get(f"{core}/configmaps/b")
        assert restored["data"] == {"k": "good"} and ann.MANAGED not in (restored["metadata"].get("labels") or {})
        assert (await pipe.src.get(f"{core}/configmaps/a"))["data"] == {"k": "good"}
        assert (await pipe.src.get(f"{core}/configmaps/c"))["data"] == {"k": "bad"}  # created since: left alone

        # A deleted namespace comes back whole, as it was, running.
        await pipe.src.request("DELETE", core)
        await h.eventually(lambda: h.absent(pipe.src, core), timeout=60)
        ran = await standby(registered, "restore", NS, *at, *writer, "--namespaces", NS, "--yes", *url)
        assert ran.code == 0 and "restored: 3 created, 0 updated, 0 failed" in ran.err, (ran.out, ran.err)
        assert await configmaps(pipe.src) == good
        web = await pipe.src.get(f"/apis/apps/v1/namespaces/{NS}/deployments/web")
        assert web["spec"]["replicas"] == 3 and ann.MANAGED not in (web["metadata"].get("labels") or {})
        for args, says in (
                (["--source-kubeconfig", str(registered.kubeconfig)], "another cluster than the source"),
                (["--source-kubeconfig", "/nonexistent"], "--source-kubeconfig /nonexistent"),
                ([*writer, "--at", "2020-01-01T00:00:00Z"], "earliest moment available is")):
            ran = await standby(registered, "restore", NS, *[a for a in at if "--at" not in args], *args, "--yes",
                                *url)
            assert ran.code == 2 and says in ran.err, (args, ran.err)

        # Refused, nothing written.
        for args, says in (
                (["--at", rfc3339(time.time() + 3600)], "is in the future"),
                (["--at", "2020-01-01T00:00:00Z"], "earliest moment available is"),
                (["--target-cluster", "source"], "is the plan's source cluster"),
                (["--target-cluster", "nowhere"], "nowhere"),
                (["--at", "yesterday"], "RFC 3339"),
                (["--resources", ".apps"], "is not a resource")):
            ran = await standby(registered, "rebuild", "--direct", NS, *args, *url)
            assert ran.code == 2 and says in ran.err, (args, ran.err)
        assert (await standby(registered, "rebuild", "--direct", "no-such-plan", *url)).code == 2
        assert (await standby(registered, "rebuild", "no-such-plan")).code == 2
    finally:
        await h.delete(pipe.dst, secret_path)
        await h.delete(pipe.dst, f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/managedclusters/empty")
        await h.delete(pipe.src, f"/api/v1/namespaces/{NS}")


async def test_a_rebuild_resource_is_run_by_the_syncer_and_followed_by_the_command(
        pipe: Pipeline, registered: LocalCluster, empty: LocalCluster) -> None:
    """`standby rebuild --wait` creates a Rebuild and follows it; the syncer runs it (no stream access
    needed by the command), and its status and Events tell what happened. A Rebuild that cannot
    run ends Failed with the reason."""
    ns = "rb-cr"
    core = f"/api/v1/namespaces/{ns}"
    await h.namespace(pipe.src, ns)
    await h.apply_plan(pipe.dst, h.plan_body(ns, [{"version": "v1", "resource": "configmaps",
                                                   "filters": {"namespaces": [ns]}}], forceNamespaceCreation=True))
    try:
        for i in range(20):
            await pipe.src.apply(f"{core}/configmaps/cm-{i}", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": f"cm-{i}", "namespace": ns}, "data": {"i": str(i)}}, field_manager="test")
        await h.eventually(lambda: pipe.dst.get(f"{core}/configmaps/cm-19"), timeout=30)
        ran = await standby(registered, "rebuild", ns, "--target-cluster", "empty", "--dry-run", "--wait")
        assert ran.code == 0 and "20 created" in ran.out, (ran.out, ran.err)
        ran = await standby(registered, "rebuild", ns, "--target-cluster", "empty", "--wait", "--timeout", "60s")
        assert ran.code == 0, (ran.out, ran.err)
        name = ran.out.splitlines()[0].split()[0].split("/")[1]
        rebuild = await pipe.dst.get(f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/rebuilds/{name}")
        status = rebuild["status"]
        assert (status["phase"], status["summary"], status["counts"]["create"]) == ("Completed", "20/20", 20), status
        assert status["at"] and status["earliestAvailable"] and status["target"] == "managedcluster empty"
        async with KubeClient.from_kubeconfig(empty.kubeconfig) as fresh:
            assert len((await fresh.get(f"{core}/configmaps", labelSelector=ann.MANAGED_SELECTOR))["items"]) == 20
        reasons = [e["reason"] for e in (await pipe.dst.get(
            f"/api/v1/namespaces/{h.SYSTEM}/events", fieldSelector=f"involvedObject.name={name}"))["items"]]
        assert "Rebuilding" in reasons and "RebuildCompleted" in reasons, reasons

        ran = await standby(registered, "rebuild", ns, "--at", "2020-01-01T00:00:00Z", "--wait")
        assert ran.code == 2 and "earliest moment available is" in ran.err, (ran.out, ran.err)
    finally:
        await h.delete(pipe.dst, f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/managedclusters/empty")
        await h.delete(pipe.src, f"/api/v1/namespaces/{ns}")


async def test_a_rebuild_interrupted_halfway_says_how_far_it_got_and_is_resumed_where_it_was(
        source: LocalCluster, registered: LocalCluster, nats_server: LocalNats, env_root: Path) -> None:
    """The syncer stops in the middle of a Rebuild: its status says how far it got (steps taken,
    counts by action), nothing more is written, and the next syncer runs it again to the end, finding
    what the interrupted run wrote unchanged."""
    ns, count = "rb-resume", 2000
    core = f"/api/v1/namespaces/{ns}"
    rebuilds = f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/rebuilds"
    gate = asyncio.Semaphore(32)

    async def create(i: int) -> None:
        async with gate:
            await pipe.src.apply(f"{core}/configmaps/cm-{i}", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": f"cm-{i}", "namespace": ns}, "data": {"i": str(i)}}, field_manager="test")

    async def copies(kube: KubeClient) -> int:
        return len((await kube.get(f"{core}/configmaps", labelSelector=ann.MANAGED_SELECTOR))["items"])

    async def has_all(kube: KubeClient) -> None:
        assert await copies(kube) == count

    with empty_cluster(env_root, registered, "resume-target") as target:
        async with KubeClient.from_kubeconfig(target.kubeconfig) as fresh:
            try:
                async with pipeline(source, registered, nats_server) as pipe:
                    await h.protect_configmaps(pipe.src, pipe.dst, ns)
                    await asyncio.gather(*(create(i) for i in range(count)))
                    await h.eventually(lambda: has_all(pipe.dst), timeout=120, interval=1)
                    made = await pipe.dst.request("POST", rebuilds, body=rebuild.resource(
                        ns, at=None, target_cluster="resume-target", active=False, selection=Selection(), prune=False,
                        dry_run=False))
                    path = f"{rebuilds}/{made['metadata']['name']}"

                    async def started() -> None:
                        assert ((await pipe.dst.get(path)).get("status") or {}).get("done", 0) > 0
                    await h.eventually(started, timeout=60, interval=0.05)
                # The syncer is gone, in the middle of it.
                async with KubeClient.from_kubeconfig(registered.kubeconfig) as own:
                    status = (await own.get(path))["status"]
                    assert status["phase"] == "Running" and 0 < status["done"] < status["total"] == count, status
                    assert status["counts"]["create"] == status["done"], status  # what it did, as it went
                    written = await copies(fresh)
                    assert written >= status["done"]
                    await asyncio.sleep(1.0)
                    assert await copies(fresh) == written, "nothing written once the syncer stopped"

                async with pipeline(source, registered, nats_server, keep_plans=True) as pipe:
                    async def completed() -> dict[str, Any]:
                        status = (await pipe.dst.get(path))["status"]
                        assert status["phase"] == "Completed", status
                        return dict(status)
                    status = await h.eventually(completed, timeout=120, interval=0.5)
                    assert status["counts"] == {"create": count - written, "unchanged": written, "update": 0,
                                                "delete": 0, "failed": 0}, (written, status)
                    await has_all(fresh)
                    reasons = [e["reason"] for e in (await pipe.dst.get(
                        f"/api/v1/namespaces/{h.SYSTEM}/events",
                        fieldSelector=f"involvedObject.name={made['metadata']['name']}"))["items"]]
                    assert "RebuildResumed" in reasons, reasons
            finally:
                async with KubeClient.from_kubeconfig(registered.kubeconfig) as own:
                    await h.delete(own, f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/managedclusters/"
                                        f"resume-target")
                    await h.delete(own, f"/apis/dr.standby.dev/v1alpha1/namespaces/{h.SYSTEM}/recoveryplans/{ns}")
                async with KubeClient.from_kubeconfig(source.kubeconfig) as src:
                    await h.delete(src, core)
