"""``standby demo``: the whole story on local real clusters, in one command.

Starts a source and a stand-by (full: scheduler, controllers, kwok nodes) and NATS, runs the
watcher, syncer and recovery as processes, applies a sample shop to the source, shows the
deactivated copies appearing with the replication lag, then fails over and shows the progress."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from schemas import API_VERSION
from schemas import annotations as ann
from services.common.kube import ApiError, KubeClient
from services.devenv import bootstrap, environment
from services.devenv.environment import Topology

NS = "shop"
SYSTEM = bootstrap.SYSTEM_NAMESPACE


def say(message: str) -> None:
    print(message, flush=True)


def _template(app: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "main", "image": f"registry.example/{app}:1.0"}]}}


SAMPLE: list[tuple[str, dict[str, Any]]] = [
    (f"/api/v1/namespaces/{NS}/configmaps/settings", {"apiVersion": "v1", "kind": "ConfigMap",
                                                     "metadata": {"name": "settings"}, "data": {"mode": "prod"}}),
    (f"/api/v1/namespaces/{NS}/secrets/db", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                                            "stringData": {"password": "demo"}}),
    (f"/api/v1/namespaces/{NS}/services/web", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                              "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    *[(f"/apis/apps/v1/namespaces/{NS}/deployments/{name}", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": _template(name)}})
      for name, replicas in (("web", 3), ("cart", 2), ("checkout", 2))],
    (f"/apis/apps/v1/namespaces/{NS}/statefulsets/db", {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": _template("db")}}),
    (f"/apis/batch/v1/namespaces/{NS}/cronjobs/report", {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "report"},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {
            **_template("report"), "spec": {**_template("report")["spec"], "restartPolicy": "Never"}}}}}}),
]
RESOURCES = [("", "v1", "configmaps"), ("", "v1", "secrets"), ("", "v1", "services"), ("apps", "v1", "deployments"),
             ("apps", "v1", "statefulsets"), ("batch", "v1", "cronjobs")]


async def _scenario(env: environment.DevEnvironment) -> int:
    source, dest, sync = env.clusters["source"], env.clusters["destination"], env.sync_cluster
    async with KubeClient.from_kubeconfig(source.kubeconfig) as src, \
            KubeClient.from_kubeconfig(dest.kubeconfig) as dst, KubeClient.from_kubeconfig(sync.kubeconfig) as own:
        say(f"\n[2/5] Applying the sample shop to the source ({len(SAMPLE)} objects in namespace {NS})")
        await src.apply(f"/api/v1/namespaces/{NS}", {"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": NS}}, field_manager="demo")
        for path, body in SAMPLE:
            await src.apply(path, {**body, "metadata": {**body["metadata"], "namespace": NS}}, field_manager="demo")
        plan: dict[str, Any] = {
                "apiVersion": API_VERSION, "kind": "RecoveryPlan", "metadata": {"name": NS, "namespace": SYSTEM},
                "spec": {"forceNamespaceCreation": True,
                         "sourceClusterRef": {"name": "source", "namespace": SYSTEM},
                         "resources": [{"group": g, "version": v, "resource": r, "filters": {"namespaces": [NS]}}
                                       for g, v, r in RESOURCES]}}
        if env.topology == "three":
            plan["spec"]["destinationClusterRef"] = {"name": "destination", "namespace": SYSTEM}
        await own.apply(f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryplans/{NS}", plan, field_manager="demo")
        say("      RecoveryPlan 'shop' created; watching the stand-by fill up with deactivated copies:")
        started = time.monotonic()
        while True:
            deployments = await _list(dst, f"/apis/apps/v1/namespaces/{NS}/deployments")
            copies = [d for d in deployments if ann.is_managed(d["metadata"])]
            line = ", ".join(f"{d['metadata']['name']}={d['spec']['replicas']} (remembers "
                             f"{json.loads(d['metadata']['annotations'][ann.INVERSE])[0]['value']})" for d in copies)
            say(f"      t+{time.monotonic() - started:4.1f}s  deployments in stand-by: {line or '-'}")
            if len(copies) == 3:
                break
            if time.monotonic() - started > 60:
                say("      copies did not appear within 60s; see the service logs under " + str(env.root / "logs"))
                return 1
            await asyncio.sleep(0.5)
        status: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while status.get("phase") != "Synced" and time.monotonic() < deadline:  # reported every few seconds
            await asyncio.sleep(0.5)
            status = (await own.get(f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryplans/{NS}")).get("status") or {}
        pods = await _list(dst, f"/api/v1/namespaces/{NS}/pods")
        say(f"      plan status: {status.get('phase')}, in sync {status.get('objectsInSync')}, "
            f"replication lag {status.get('replicationLagSeconds')}s; pods running in the stand-by: {len(pods)}")

        say("\n[3/5] A change in the source follows within a second (web scaled to 5)")
        t0 = time.monotonic()
        await src.request("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/web", body={"spec": {"replicas": 5}},
                          content_type="application/merge-patch+json")
        while True:
            web = await dst.get(f"/apis/apps/v1/namespaces/{NS}/deployments/web")
            if json.loads(web["metadata"]["annotations"][ann.INVERSE])[0]["value"] == 5:
                break
            await asyncio.sleep(0.02)
        say(f"      stand-by copy now remembers 5 replicas (still 0 running), after {time.monotonic() - t0:.2f}s")

        say("\n[4/5] Disaster: failing over with a RecoveryExecutionJob in the stand-by")
        await dst.apply(f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryexecutionplans/region-loss", {
            "apiVersion": API_VERSION, "kind": "RecoveryExecutionPlan",
            "metadata": {"name": "region-loss", "namespace": SYSTEM},
            "spec": {"waves": [{"name": "shop", "recoveryPlans": [{"name": NS, "namespace": SYSTEM}],
                                "waitForReady": True, "timeoutSeconds": 120}]}}, field_manager="demo")
        job = await dst.request("POST", f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryexecutionjobs", body={
            "apiVersion": API_VERSION, "kind": "RecoveryExecutionJob",
            "metadata": {"generateName": "region-loss-", "namespace": SYSTEM},
            "spec": {"recoveryExecutionPlanRef": {"name": "region-loss", "namespace": SYSTEM}}})
        name, t0, last = job["metadata"]["name"], time.monotonic(), ""
        while True:
            status = (await dst.get(f"/apis/{API_VERSION}/namespaces/{SYSTEM}/recoveryexecutionjobs/{name}"))\
                .get("status") or {}
            line = f"{status.get('phase', 'Pending')} {status.get('progress', {}).get('summary', '')}"
            if line != last:
                say(f"      t+{time.monotonic() - t0:4.1f}s  job {name}: {line}")
                last = line
            if status.get("phase") in ("Completed", "PartiallyFailed", "Failed"):
                break
            if time.monotonic() - t0 > 180:
                say("      the job did not finish within 180s")
                return 1
            await asyncio.sleep(0.3)
        say("\n[5/5] The stand-by is now active:")
        for d in await _list(dst, f"/apis/apps/v1/namespaces/{NS}/deployments"):
            st = d.get("status") or {}
            say(f"      deployment {d['metadata']['name']:<9} replicas {d['spec']['replicas']}, "
                f"available {st.get('availableReplicas', 0)}")
        pods = await _list(dst, f"/api/v1/namespaces/{NS}/pods")
        say(f"      pods in the stand-by: {len(pods)} ({status.get('message', '')})")
        return 0 if status.get("phase") == "Completed" else 1


async def _list(client: KubeClient, path: str) -> list[dict[str, Any]]:
    try:
        return list((await client.get(path)).get("items") or [])
    except ApiError:
        return []


def run(root: Path, *, topology: Topology = "two", keep: bool = False) -> int:
    if environment.status(root)["running"]:
        environment.down(root)
    say(f"[1/5] Starting local clusters ({topology} topology, full stand-by with kwok nodes) and NATS in {root}")
    started = time.monotonic()
    env = environment.DevEnvironment(root, topology=topology, full=True)
    try:
        env.start()
        bootstrap.install(env)
        bootstrap.start_services(env)
        env.write_files()
        say(f"      ready in {time.monotonic() - started:.1f}s; service logs in {root / 'logs'}")
        code = asyncio.run(_scenario(env))
    except KeyboardInterrupt:
        code = 130
    finally:
        if keep:
            env.detach()
            say(f"\nLeft running (--keep). Stop with: standby dev down --dir {root}")
        else:
            env.stop()
            say("\nStopped everything.")
    say("Demo " + ("succeeded." if code == 0 else "FAILED."))
    return code


if __name__ == "__main__":
    sys.exit(run(Path(".devenv/demo")))
