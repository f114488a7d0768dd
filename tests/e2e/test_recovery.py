"""Failover end to end: copies made by the real pipeline, activated by the real operator process."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from schemas import API_VERSION
from schemas import annotations as ann
from services.common.fencing import binding_path
from services.common.kube import ApiError
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from services.devenv.processes import Process
from tests.e2e.conftest import Pipeline
from tests.e2e.test_sync import create_app
from tests.support import app, crds
from tests.support import env as h

JOBS = f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/recoveryexecutionjobs"


def recovery_process(destination: LocalCluster, nats_server: LocalNats | None, name: str, **settings: str) -> Process:
    """``settings``: more of its settings, by their names after ``STANDBY_RECOVERY_``."""
    p = "STANDBY_RECOVERY_"
    env = {p + "KUBE__KUBECONFIG": str(destination.kubeconfig), p + "SERVE__PORT": "0",
           p + "SERVE__LOG_FORMAT": "json", p + "FENCE_SETTLE_SECONDS": "2"} | {p + k: v for k, v in settings.items()}
    if nats_server is not None:
        env.update({p + "NATS__URL": nats_server.url, p + "NATS__USER": nats_server.user,
                    p + "NATS__PASSWORD": nats_server.password})
    return Process(name, [sys.executable, "-m", "services.recovery"], destination.root / "logs" / f"{name}.log",
                   env=env)


async def execution_plan(p: Pipeline, name: str, plan: str, *, wait: bool = True) -> None:
    await p.dst.apply(f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/recoveryexecutionplans/{name}", {
        "apiVersion": API_VERSION, "kind": "RecoveryExecutionPlan", "metadata": {"name": name, "namespace": h.SYSTEM},
        "spec": {"waves": [{"name": "all", "recoveryPlans": [{"name": plan, "namespace": h.SYSTEM}],
                            "waitForReady": wait, "timeoutSeconds": 120}]}}, field_manager="test")


async def start_job(p: Pipeline, plan: str, *, dry_run: bool = False) -> str:
    job = await p.dst.request("POST", JOBS, body={
        "apiVersion": API_VERSION, "kind": "RecoveryExecutionJob",
        "metadata": {"generateName": f"{plan}-", "namespace": h.SYSTEM},
        "spec": {"recoveryExecutionPlanRef": {"name": plan, "namespace": h.SYSTEM}, "dryRun": dry_run}})
    return str(job["metadata"]["name"])


async def finished(p: Pipeline, name: str, timeout: float = 150) -> dict[str, Any]:
    async def check() -> dict[str, Any]:
        status = (await p.dst.get(f"{JOBS}/{name}")).get("status") or {}
        assert status.get("phase") in ("Completed", "PartiallyFailed", "Failed"), status.get("phase")
        return status
    return await h.eventually(check, timeout=timeout, interval=0.5)


async def run_job(p: Pipeline, cluster: LocalCluster, nats_server: LocalNats | None, plan: str, operator_name: str,
                  *, dry_run: bool = False, timeout: float = 150) -> dict[str, Any]:
    """Start the operator as a process in ``cluster``, run one job of ``plan`` to its end, stop the
    operator; returns the job's final status."""
    operator = recovery_process(cluster, nats_server, operator_name).start()
    try:
        return await finished(p, await start_job(p, plan, dry_run=dry_run), timeout=timeout)
    finally:
        operator.stop()


async def deployment(p: Pipeline, ns: str, name: str) -> dict[str, Any]:
    return await p.dst.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")


async def test_failover_dry_run_resume_fence_and_rerun(pipe: Pipeline, registered: LocalCluster,
                                                       nats_server: LocalNats) -> None:
    ns = "rec"
    await create_app(pipe, ns)
    await h.apply_plan(pipe.dst, h.plan_body("rec", app.plan_resources([ns]), forceNamespaceCreation=True))

    async def copied() -> None:
        assert (await deployment(pipe, ns, "web"))["metadata"]["annotations"][ann.PLAN] == f"{h.SYSTEM}/rec"
        assert (await pipe.dst.get(f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/web"))
    await h.eventually(copied, timeout=30)
    # The syncer bound the fence policy to the plan's copies when it started it, before any failover.
    binding = (await pipe.dst.get(binding_path(h.SYSTEM, "rec")))["spec"]
    assert binding["paramRef"]["name"] == ann.fence_name(h.SYSTEM, "rec"), binding
    assert binding["matchResources"]["objectSelector"]["matchLabels"] == {ann.PLAN_LABEL: f"{h.SYSTEM}.rec"}
    await execution_plan(pipe, "rec", "rec")
    operator = recovery_process(registered, nats_server, "recovery-1").start()
    try:
        # 1. Dry run: a readable report, nothing changed.
        dry = await finished(pipe, await start_job(pipe, "rec", dry_run=True))
        assert dry["phase"] == "Completed", dry
        changes = {o["ref"]: o for o in dry["objects"]}
        web = changes[f"deployments.apps/{ns}/web"]
        assert web["outcome"] == "WouldChange" and any("/spec/replicas" in c for c in web["changes"])
        assert (await deployment(pipe, ns, "web"))["spec"]["replicas"] == 0

        # 2. The failover, with the operator killed mid-job and restarted. Fencing lasts as long as the
        # fence writes and the API server's proof (tens of milliseconds here), Activating as long as
        # the waves' readiness gates (seconds): the kill lands in whichever is seen first.
        name = await start_job(pipe, "rec")

        async def mid_job() -> None:
            status = (await pipe.dst.get(f"{JOBS}/{name}")).get("status") or {}
            assert status.get("phase") in ("Fencing", "Activating"), status.get("phase")
        await h.eventually(mid_job, timeout=30, interval=0.02)
        operator.kill()
        operator = recovery_process(registered, nats_server, "recovery-2").start()
        status = await finished(pipe, name)
        assert status["phase"] == "Completed", json.dumps(status)[:2000]
        assert status["progress"]["done"] == status["progress"]["total"] > 0
        assert status["waves"] and all(w["phase"] == "Completed" for w in status["waves"]), status["waves"]
        assert sum(w["done"] for w in status["waves"]) == status["progress"]["total"]

        web = await deployment(pipe, ns, "web")
        assert web["spec"]["replicas"] == 3
        assert not any(k.startswith(ann.PREFIX) for k in web["metadata"].get("annotations") or {})
        assert (await deployment(pipe, ns, "api"))["spec"]["replicas"] == 2
        assert (await pipe.dst.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/db"))["spec"]["replicas"] == 2
        agent = await pipe.dst.get(f"/apis/apps/v1/namespaces/{ns}/daemonsets/agent")
        assert "nodeSelector" not in agent["spec"]["template"]["spec"]
        assert (await pipe.dst.get(f"/apis/batch/v1/namespaces/{ns}/cronjobs/report"))["spec"]["suspend"] is False
        hpa = await pipe.dst.get(f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/web")
        assert hpa["spec"]["scaleTargetRef"]["name"] == "web"
        status_web = web.get("status") or {}
        assert status_web.get("availableReplicas") == 3, "the readiness gate waited for Available on kwok nodes"

        # 3. A late change from the old primary changes nothing in the activated stand-by.
        await pipe.src.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/web",
                               body={"spec": {"replicas": 7}}, content_type="application/merge-patch+json")
        await asyncio.sleep(3)
        assert (await deployment(pipe, ns, "web"))["spec"]["replicas"] == 3
        # ... and the API server itself refuses to turn it back into a copy, whoever writes it.
        with pytest.raises(ApiError, match="has failed over"):
            await pipe.dst.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/web", body={"metadata": {
                "labels": {ann.MANAGED: ann.MANAGED_VALUE}, "annotations": {ann.PLAN: f"{h.SYSTEM}/rec"}},
                "spec": {"replicas": 0}}, content_type="application/merge-patch+json")

        # 4. Running the job again is harmless.
        again = await finished(pipe, await start_job(pipe, "rec"))
        assert again["phase"] == "Completed" and again["progress"]["total"] == 0
        assert (await deployment(pipe, ns, "web"))["spec"]["replicas"] == 3
    finally:
        operator.stop()


async def test_missing_execution_plan_fails_clearly(pipe: Pipeline, registered: LocalCluster) -> None:
    status = await run_job(pipe, registered, None, "does-not-exist", "recovery-missing", timeout=60)
    assert status["phase"] == "Failed"
    assert "does-not-exist" in status["message"]


async def test_finalizers_are_held_on_the_copy_and_work_after_failover(pipe: Pipeline, registered: LocalCluster,
                                                                      nats_server: LocalNats) -> None:
    """An Argo CD Application with its cascade-deletion finalizer: the copy carries none (deleting a
    copy never waits for a controller that does not run in the stand-by); after failover the
    finalizer is back, so deleting the Application waits for Argo CD to clean up, as in the source."""
    ns, finalizer = "finalizing", "resources-finalizer.argocd.argoproj.io"
    path = f"{crds.ARGO}/namespaces/{ns}/applications/guestbook"
    try:
        await crds.install_argo("applications", "Application", pipe.src, pipe.dst)
        await h.namespace(pipe.src, ns)
        await pipe.src.apply(path, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                                    "metadata": {"name": "guestbook", "namespace": ns, "finalizers": [finalizer]},
                                    "spec": {"project": "default"}}, field_manager="test")
        await h.apply_plan(pipe.dst, h.plan_body(ns, [{"group": "argoproj.io", "version": "v1alpha1",
                                                       "resource": "applications", "filters": {"namespaces": [ns]}}],
                                                 forceNamespaceCreation=True))
        copy = await h.eventually(lambda: pipe.dst.get(path))
        assert "finalizers" not in copy["metadata"]

        await execution_plan(pipe, ns, ns, wait=False)
        status = await run_job(pipe, registered, None, ns, "recovery-finalizers")
        assert status["phase"] == "Completed", status
        activated = await pipe.dst.get(path)
        assert activated["metadata"]["finalizers"] == [finalizer]

        await pipe.dst.request("DELETE", path)
        held = await pipe.dst.get(path)  # the finalizer runs: Argo CD's controller would now clean up
        assert held["metadata"].get("deletionTimestamp") and held["metadata"]["finalizers"] == [finalizer]
    finally:
        await crds.remove_argo("applications", pipe.src, pipe.dst)
