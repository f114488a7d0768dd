"""The operator's command line against the running pipeline: `standby status` tells the truth with
exit codes scripts can rely on, and `standby failover` creates, follows and judges a failover
(a two-wave plan whose second wave has a Deployment that cannot become ready)."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

from schemas import API_VERSION
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from tests.e2e.conftest import Pipeline
from tests.e2e.test_recovery import JOBS, recovery_process
from tests.support import env as h

EXECUTION_PLANS = f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/recoveryexecutionplans"
MCS = f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/managedclusters"


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def standby(cluster: LocalCluster, *args: str, timeout: float = 180) -> Ran:
    """The `standby` command as an operator runs it (off the event loop the pipeline runs on)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, "--kubeconfig", str(cluster.kubeconfig),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def deployment(ns: str, name: str, **pod: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "main", "image": "registry.example/x:1"}], **pod}}}}


async def test_status_and_a_two_wave_failover_from_the_command_line(
        pipe: Pipeline, registered: LocalCluster, nats_server: LocalNats) -> None:
    for ns, pod in (("op-web", {}), ("op-stuck", {"nodeSelector": {"no-such-node": "true"}})):
        await h.namespace(pipe.src, ns)
        await pipe.src.apply(f"/apis/apps/v1/namespaces/{ns}/deployments/web", deployment(ns, "web", **pod),
                             field_manager="test")
        await h.apply_plan(pipe.dst, h.plan_body(ns, [{"group": "apps", "version": "v1", "resource": "deployments",
                                                        "filters": {"namespaces": [ns]}}],
                                                  forceNamespaceCreation=True))
    await pipe.dst.apply(f"{EXECUTION_PLANS}/op-two-waves", {
        "apiVersion": API_VERSION, "kind": "RecoveryExecutionPlan",
        "metadata": {"name": "op-two-waves", "namespace": h.SYSTEM},
        "spec": {"waves": [
            {"name": "first", "recoveryPlans": [{"name": "op-web", "namespace": h.SYSTEM}], "waitForReady": True,
             "timeoutSeconds": 60},
            {"name": "second", "recoveryPlans": [{"name": "op-stuck", "namespace": h.SYSTEM}], "waitForReady": True,
             "timeoutSeconds": 5}]}},
        field_manager="test")

    async def protecting() -> None:
        ran = await standby(registered, "status", "op-web", "-o", "json")
        assert ran.code == 0, (ran.out, ran.err)
        assert json.loads(ran.out)["plans"][0]["protecting"] is True
    await h.eventually(protecting, timeout=90, interval=1)

    ran = await standby(registered, "status", "op-web")
    lines = ran.out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "PHASE", "SOURCE"] and lines[1].split()[:3] == ["op-web", "Synced",
                                                                                           "Reachable"]
    assert "PROTECTING" in lines[0] and lines[1].split()[-1] == "Yes"
    assert any(line.split()[:2] == ["source", "True"] for line in lines), ran.out

    ran = await standby(registered, "status", "nope")
    assert (ran.code, ran.out, ran.err.strip()) == (2, "", "standby: recoveryplan standby-system/nope not found")

    try:
        # No operator running yet: the job waits, --timeout says so with its own code, and a second
        # failover of the same plan is refused while that job has not ended.
        ran = await standby(registered, "failover", "op-web", "--dry-run", "--wait", "--timeout", "2s")
        assert ran.code == 3 and "timed out after 2s" in ran.err, (ran.out, ran.err)
        jobs = len((await pipe.dst.get(JOBS))["items"])
        ran = await standby(registered, "failover", "op-web", "--dry-run")
        assert ran.code == 2 and "still running" in ran.err, ran.err
        assert len((await pipe.dst.get(JOBS))["items"]) == jobs, "nothing created"

        operator = recovery_process(registered, nats_server, "recovery-operate").start()
        try:
            ran = await standby(registered, "failover", "--execution-plan", "op-two-waves", "--wait",
                                "--timeout", "2m")
        finally:
            operator.stop()
        assert ran.code == 1, (ran.out, ran.err)
        stages = [line.split("] ", 1)[1] for line in ran.err.splitlines()]  # each plan: its namespace, web
        assert stages.index("wave first: Completed 2/2") < stages.index("wave second: Running 0/2"), ran.err
        assert stages[-2:] == ["wave second: PartiallyFailed 2/2, 1 failed (not ready after 5s: "
                               "deployments.apps/op-stuck/web)", "job PartiallyFailed: 4 objects, 1 failed"], ran.err
        assert "timings: " in ran.out, ran.out
        web = await pipe.dst.get("/apis/apps/v1/namespaces/op-web/deployments/web")
        assert web["spec"]["replicas"] == 1 and (web.get("status") or {}).get("availableReplicas") == 1

        ran = await standby(registered, "status", "op-web")
        assert ran.code == 1 and "Activated" in ran.out and "Fenced" in ran.out, ran.out  # not protecting now
    finally:
        for job in (await pipe.dst.get(JOBS))["items"]:
            await h.delete(pipe.dst, f"{JOBS}/{job['metadata']['name']}")
        for name in ("op-two-waves", "failover-op-web"):
            await h.delete(pipe.dst, f"{EXECUTION_PLANS}/{name}")
        for ns in ("op-web", "op-stuck"):
            await h.delete(pipe.dst, f"/api/v1/namespaces/{h.SYSTEM}/configmaps/standby-fence.{h.SYSTEM}.{ns}")
