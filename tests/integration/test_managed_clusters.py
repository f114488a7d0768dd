"""ManagedCluster status against real API servers: a good cluster is Ready with its version; each
kind of bad input is a condition (and an Event) that says which, and nothing crashes. Of several
watcher replicas, one probes each cluster and the replica serving a plan tells it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas import API_VERSION
from services.common.kube import KubeClient
from services.common.leasing import PlanLeases
from services.common.settings import LeaseSettings
from services.devenv import bootstrap, ports
from services.devenv.clusters import LocalCluster
from services.watcher.clusters import ClusterProber
from tests.support import env as h

MCS = f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/managedclusters"


def kubeconfig(cluster: LocalCluster, *, server: str | None = None, user: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server or cluster.server, "certificate-authority-data":
                                               base64.b64encode(cluster.pki.ca_cert.read_bytes()).decode()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": user or {"token": cluster.token}}]})


async def managed(kube: KubeClient, name: str, secret_data: dict[str, str] | None) -> None:
    if secret_data is not None:
        await kube.apply(f"/api/v1/namespaces/{h.SYSTEM}/secrets/mc-{name}", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"mc-{name}", "namespace": h.SYSTEM},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret_data.items()}},
            field_manager="test")
    await kube.apply(f"{MCS}/{name}", {"apiVersion": API_VERSION, "kind": "ManagedCluster",
                                       "metadata": {"name": name, "namespace": h.SYSTEM},
                                       "spec": {"secretRef": {"name": f"mc-{name}", "namespace": h.SYSTEM}}},
                     field_manager="test")


@pytest.fixture
async def kube(destination: LocalCluster) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as client:
        yield client


async def test_each_managed_cluster_says_whether_it_can_be_used_and_why_not(
        kube: KubeClient, source: LocalCluster, tmp_path: Path) -> None:
    reader = source.mint_credentials("probe-reader", namespace=h.SYSTEM, rules=bootstrap.READ_ONLY_RULES,
                                     cluster_scoped=True)
    failing_plugin = tmp_path / "plugin.py"
    failing_plugin.write_text("import sys\nprint('no cloud credentials', file=sys.stderr)\nsys.exit(1)\n")
    cases = {
        "mc-good": ({"kubeconfig.yaml": kubeconfig(source)}, "True", "Connected"),
        "mc-nosecret": (None, "False", "SecretNotFound"),
        "mc-nokey": ({"config": kubeconfig(source)}, "False", "KubeconfigMissing"),
        "mc-garbage": ({"kubeconfig.yaml": "{not: [a kubeconfig"}, "False", "KubeconfigInvalid"),
        "mc-unreachable": ({"kubeconfig.yaml": kubeconfig(source, server=f"https://127.0.0.1:{ports.free_ports(1)[0]}")},
                           "False", "Unreachable"),
        "mc-refused": ({"kubeconfig.yaml": kubeconfig(source, user={"token": "not-a-token"})}, "False", "Unauthorized"),
        "mc-plugin": ({"kubeconfig.yaml": kubeconfig(source, user={"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
            "args": [str(failing_plugin)]}})}, "False", "CredentialsUnavailable"),
        # Read-only credentials are enough for a source, not for the stand-by a plan writes into.
        "mc-readonly": ({"kubeconfig.yaml": reader.read_text()}, "False", "Forbidden"),
    }
    plans = {"uses-good": ("mc-good", None), "uses-refused": ("mc-refused", None),
             "uses-nothing": ("mc-absent", None), "writes-readonly": ("mc-good", "mc-readonly")}
    try:
        for name, (data, _, _) in cases.items():
            await managed(kube, name, data)
        for plan, (src, dst) in plans.items():
            refs = {"sourceClusterRef": {"name": src, "namespace": h.SYSTEM}}
            if dst:
                refs["destinationClusterRef"] = {"name": dst, "namespace": h.SYSTEM}
            await h.apply_plan(kube, h.plan_body(plan, [{"version": "v1", "resource": "configmaps"}], **refs))
        await ClusterProber(kube, timeout_seconds=3).probe_all()
        for name, (_, ready, reason) in cases.items():
            status = (await kube.get(f"{MCS}/{name}")).get("status") or {}
            condition = next(c for c in status["conditions"] if c["type"] == "Ready")
            assert (condition["status"], condition["reason"]) == (ready, reason), (name, status)
            assert status["lastProbeTime"]
            if ready == "True":
                assert status["serverVersion"] == "v1.36.3" and "error" not in status, status
            elif reason == "Forbidden":  # reached and authenticated: its version is known
                assert status["error"] and status["serverVersion"] == "v1.36.3", status
            else:
                assert status["error"] and "serverVersion" not in status, status
        plugin = (await kube.get(f"{MCS}/mc-plugin"))["status"]["error"]
        assert "no cloud credentials" in plugin
        refused = (await kube.get(f"{MCS}/mc-readonly"))["status"]["error"]
        assert refused.startswith("system:serviceaccount:standby-system:probe-reader may not: ")
        assert refused.endswith("may not: create configmaps, delete configmaps, patch configmaps"), refused
        good = (await kube.get(f"{MCS}/mc-good"))["status"]["conditions"][0]["message"]
        assert "allowed the 2 accesses its plans need" in good, good  # list and watch configmaps
        listed = await kube.get(f"/api/v1/namespaces/{h.SYSTEM}/events",
                                fieldSelector="involvedObject.kind=ManagedCluster,involvedObject.name=mc-refused")
        assert [e["reason"] for e in listed["items"]] == ["ClusterUnauthorized"]
        # Plans say whether the clusters they use are Ready.
        told = {plan: h.condition(await h.plan_status(kube, plan), "ClustersReady") for plan in plans}
        assert told["uses-good"]["status"] == "True", told
        assert told["uses-refused"]["status"] == "False", told
        assert f"{h.SYSTEM}/mc-refused (Unauthorized)" in told["uses-refused"]["message"], told
        assert f"{h.SYSTEM}/mc-absent (NotFound)" in told["uses-nothing"]["message"], told
        assert f"{h.SYSTEM}/mc-readonly (Forbidden)" in told["writes-readonly"]["message"], told
    finally:
        for plan in plans:
            await h.delete(kube, f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/recoveryplans/{plan}")
        for name in cases:
            await h.delete(kube, f"{MCS}/{name}")
            await h.delete(kube, f"/api/v1/namespaces/{h.SYSTEM}/secrets/mc-{name}")



async def test_of_two_replicas_one_probes_each_cluster_and_the_one_serving_a_plan_tells_it(
        kube: KubeClient, source: LocalCluster) -> None:
    lease_namespace = f"probers-{uuid.uuid4().hex[:6]}"
    await h.namespace(kube, lease_namespace)
    names = [f"shared-{i}" for i in range(6)]
    for name in names:
        await managed(kube, name, {"kubeconfig.yaml": kubeconfig(source)})
        await h.apply_plan(kube, h.plan_body(name, [{"version": "v1", "resource": "configmaps"}],
                                             sourceClusterRef={"name": name, "namespace": h.SYSTEM}))
    uids = {f"{h.SYSTEM}/{name}": (await kube.get(f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/recoveryplans/"
                                                  f"{name}"))["metadata"]["uid"] for name in names}
    ours = set(uids)
    replicas = [PlanLeases(kube, lease_namespace, "watcher", LeaseSettings(
        identity=identity, duration_seconds=3, renew_deadline_seconds=2.0, retry_seconds=0.5))
        for identity in ("watcher-a", "watcher-b")]

    async def serve(leases: PlanLeases) -> None:  # a supervisor's part: the plans exist, the held ones run
        while True:
            leases.want(uids)
            leases.serving(leases.assigned())
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(task) for leases in replicas for task in (leases.run(), serve(leases))]
    try:
        async def shared() -> None:
            assert sorted(len(leases.held()) for leases in replicas) == [3, 3]
            assert all(sum(leases.owns(key) for leases in replicas) == 1 for key in ours)  # both count both
        await h.eventually(shared, timeout=15)
        probers = [ClusterProber(kube, timeout_seconds=3, leases=leases) for leases in replicas]
        for prober in probers * 2:  # a plan is told once every cluster it uses was probed (by either)
            await prober.probe_all()
        probed = [set(prober.seen) & ours for prober in probers]
        assert probed[0] and probed[1] and not probed[0] & probed[1] and probed[0] | probed[1] == ours, probed
        for prober, leases in zip(probers, replicas, strict=True):
            assert set(prober.told) & ours == leases.held(), (prober.told, leases.held())
        for name in names:
            status = (await kube.get(f"{MCS}/{name}"))["status"]
            assert h.condition(status, "Ready")["status"] == "True", status
            assert h.condition(await h.plan_status(kube, name), "ClustersReady")["status"] == "True"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for leases in replicas:
            with contextlib.suppress(Exception):
                await leases.close()
        for name in names:
            await h.delete(kube, f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/recoveryplans/{name}")
            await h.delete(kube, f"{MCS}/{name}")
            await h.delete(kube, f"/api/v1/namespaces/{h.SYSTEM}/secrets/mc-{name}")
